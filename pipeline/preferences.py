"""Preference resolution: for each recipient and delivery method, send now,
batch into a digest, or skip with a reason.

Precedence, most specific first: a preference for the event type, then one
for its category, then the catalogue default (on). A ``critical`` event type
ignores preferences. A digest frequency applies only to an event type marked
``digestible`` and a method that supports digests; otherwise it means "on".
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import Aggregate, JSONField, OuterRef, QuerySet, Subquery
from django.db.models.functions import JSONArray

from delivery.registry import methods as registry
from pipeline.bulk import rows_fetch, select_in
from pipeline.catalogue import EventType
from pipeline.models import Preference


@dataclass(frozen=True)
class Decision:
    """What to do for one recipient and method: ``action`` is "now", "digest" or "skip"."""

    action: str
    digest: str = ""  # hourly / daily / weekly when action == "digest"
    reason: str = ""  # why, when action == "skip"

    def as_json(self) -> list[str]:
        return [self.action, self.digest, self.reason]

    @classmethod
    def from_json(cls, raw: Sequence[str]) -> Decision:
        return cls(*raw)


NOW = Decision("now")


#: ``{(user_id, method): [(category, event_type, setting), ...]}``: the preferences of a set of users.
PreferenceRows = dict[tuple[int, str], list[tuple[str, str, str]]]


def preferences_load(*, user_ids: Sequence[int], methods: Sequence[str]) -> PreferenceRows:
    """Every preference of ``user_ids`` for ``methods``, with one query, for :func:`preferences_resolve`.

    The pipeline loads them once for a batch of events of many types; the
    query's SQL is compiled once per number of users and methods.
    """
    rows: PreferenceRows = {}
    query = select_in(
        "preferences.load",
        lambda users, aliases: Preference.objects.filter(user_id__in=users, method__in=aliases).values_list(
            "user_id", "method", "category", "event_type", "setting"
        ),
        list(user_ids),
        list(methods),
    )
    if query is None:
        return rows
    sql, params = query
    for user_id, method, category, ev_type, setting in rows_fetch(sql, params):
        rows.setdefault((user_id, method), []).append((category, ev_type, setting))
    return rows


#: The attribute :func:`preferences_annotate` gives each user: its preferences as a JSON array.
PREFERENCES_ANNOTATION = "notiflow_preferences"


class _JsonRows(Aggregate):
    """The aggregated values as one JSON array (PostgreSQL ``jsonb_agg``, SQLite ``json_group_array``)."""

    function = "JSONB_AGG"
    output_field = JSONField()

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return super().as_sql(compiler, connection, function="JSON_GROUP_ARRAY", **extra)


def preferences_annotate(users: QuerySet[Any], methods: Sequence[str]) -> QuerySet[Any]:
    """``users`` (a queryset of the user model), each with its preferences for ``methods`` as the annotation
    :data:`PREFERENCES_ANNOTATION`: a JSON array of ``[method, category, event_type, setting]``, ``NULL``
    for a user without any. Read with the users in one query (the hot path: one round trip fewer per batch
    than :func:`preferences_load` after the users); gather them with :func:`preferences_gathered`."""
    rows = (
        Preference.objects.filter(user_id=OuterRef("pk"), method__in=list(methods))
        .order_by()
        .values("user_id")
        .annotate(rows=_JsonRows(JSONArray("method", "category", "event_type", "setting")))
        .values("rows")
    )
    return users.annotate(**{PREFERENCES_ANNOTATION: Subquery(rows)})


def preferences_gathered(users: Iterable[Any]) -> PreferenceRows:
    """The :data:`PreferenceRows` of users read through :func:`preferences_annotate` (the annotation's raw
    value: a list, or JSON text on SQLite), as :func:`preferences_load` returns them."""
    rows: PreferenceRows = {}
    for user in users:
        found = getattr(user, PREFERENCES_ANNOTATION)
        for method, category, ev_type, setting in json.loads(found) if isinstance(found, str) else found or ():
            rows.setdefault((user.pk, method), []).append((category, ev_type, setting))
    return rows


def preferences_resolve(
    *, event_type: EventType, user_ids: Sequence[int], rows: PreferenceRows | None = None
) -> dict[int, dict[str, Decision]]:
    """Decide every (recipient, method) pair for one event type.

    ``rows`` are the recipients' preferences from :func:`preferences_load`
    (loaded here, with one query, when not given). Returns
    ``{user_id: {method_alias: Decision}}`` covering every id in
    ``user_ids`` and every method in ``event_type.methods``.
    """
    if event_type.critical:
        return {uid: dict.fromkeys(event_type.methods, NOW) for uid in user_ids}
    if rows is None:
        rows = preferences_load(user_ids=user_ids, methods=event_type.methods)

    digestible = {m for m in event_type.methods if event_type.digestible and registry.get(m).supports_digest}
    decisions: dict[int, dict[str, Decision]] = {}
    for uid in user_ids:
        per_method: dict[str, Decision] = {}
        for method in event_type.methods:
            # The most specific preference wins: the event type's, then the category's, then "on".
            rank, setting, scope = 0, str(Preference.Setting.ON), ""
            for category, ev_type, value in rows.get((uid, method), ()):
                if ev_type == event_type.name and rank < 2:
                    rank, setting, scope = 2, value, f"event type {ev_type}"
                elif not ev_type and category == event_type.category and rank < 1:
                    rank, setting, scope = 1, value, f"category {category}"
            if setting == Preference.Setting.OFF:
                per_method[method] = Decision("skip", reason=f"preference: {method} off for {scope}")
            elif setting in Preference.DIGEST_SETTINGS and method in digestible:
                per_method[method] = Decision("digest", digest=setting)
            else:
                per_method[method] = NOW
        decisions[uid] = per_method
    return decisions
