"""Preference resolution: for each recipient and delivery method, send now,
batch into a digest, or skip with a reason.

Precedence, most specific first: a preference for the event type, then one
for its category, then the catalogue default (on). A ``critical`` event type
ignores preferences. A digest frequency applies only to an event type marked
``digestible`` and a method that supports digests; otherwise it means "on".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from delivery.registry import methods as registry
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


def preferences_resolve(*, event_type: EventType, user_ids: Sequence[int]) -> dict[int, dict[str, Decision]]:
    """Decide every (recipient, method) pair for one event type with one query.

    Returns ``{user_id: {method_alias: Decision}}`` covering every id in
    ``user_ids`` and every method in ``event_type.methods``.
    """
    if event_type.critical:
        return {uid: dict.fromkeys(event_type.methods, NOW) for uid in user_ids}

    rows = Preference.objects.filter(user_id__in=user_ids, method__in=event_type.methods).filter(
        category=event_type.category, event_type=""
    ) | Preference.objects.filter(user_id__in=user_ids, method__in=event_type.methods, event_type=event_type.name)
    chosen: dict[tuple[int, str], tuple[int, str, str]] = {}  # (user, method) -> (rank, setting, scope)
    for user_id, method, category, ev_type, setting in rows.values_list(
        "user_id", "method", "category", "event_type", "setting"
    ):
        rank, scope = (2, f"event type {ev_type}") if ev_type else (1, f"category {category}")
        if rank > chosen.get((user_id, method), (0, "", ""))[0]:
            chosen[(user_id, method)] = (rank, setting, scope)

    digestible = {m for m in event_type.methods if event_type.digestible and registry.get(m).supports_digest}
    decisions: dict[int, dict[str, Decision]] = {}
    for uid in user_ids:
        per_method: dict[str, Decision] = {}
        for method in event_type.methods:
            _, setting, scope = chosen.get((uid, method), (0, Preference.Setting.ON, ""))
            if setting == Preference.Setting.OFF:
                per_method[method] = Decision("skip", reason=f"preference: {method} off for {scope}")
            elif setting in Preference.DIGEST_SETTINGS and method in digestible:
                per_method[method] = Decision("digest", digest=setting)
            else:
                per_method[method] = NOW
        decisions[uid] = per_method
    return decisions
