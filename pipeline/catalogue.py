"""The event catalogue: what each event type is and how it is delivered.

Declared in settings as ``NOTIFLOW["EVENT_TYPES"]``::

    "critique.created": {
        "category": "critiques",            # preferences may target a category
        "methods": ["websocket", "email"],  # default delivery methods
        "template": "critique_created",     # notiflow/<template>/title.txt, body.txt, ...
        "critical": False,                  # True: preferences cannot switch it off
        "digestible": True,                 # True: email may be batched into a digest
    }

Templates live under ``notiflow/events/<template>/``: ``title.txt`` (in-app
title and email subject), ``body.txt`` (in-app body and email text) and,
optionally, ``body.html`` (email HTML). They are rendered with the event's
``data``, ``actor``, ``recipient`` and ``target`` in the context.

The catalogue is validated when the ``pipeline`` app is ready (web, worker
and beat processes alike); a bad entry raises ``ImproperlyConfigured``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.template import TemplateDoesNotExist
from django.template.loader import get_template

from delivery.registry import methods as registry
from pipeline.conf import notiflow_settings
from pipeline.exceptions import UnknownEventType

EVENT_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_KEYS = frozenset({"category", "methods", "template", "critical", "digestible"})


@dataclass(frozen=True)
class EventType:
    """One catalogue entry. ``methods`` are delivery method aliases."""

    name: str
    category: str
    methods: tuple[str, ...]
    template: str
    critical: bool = False
    digestible: bool = False

    def template_name(self, part: str) -> str:
        """The template path of ``part`` (``"title.txt"``, ``"body.txt"``, ``"body.html"``)."""
        return f"notiflow/events/{self.template}/{part}"


def _parse(name: str, spec: Any) -> EventType:
    where = f"NOTIFLOW['EVENT_TYPES'][{name!r}]"
    if not EVENT_TYPE_RE.match(name):
        raise ImproperlyConfigured(f"{where}: an event type is dotted lowercase, e.g. 'comment.created'.")
    if not isinstance(spec, Mapping):
        raise ImproperlyConfigured(f"{where} must be a dict.")
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise ImproperlyConfigured(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}.")
    for key in ("category", "methods"):
        if key not in spec:
            raise ImproperlyConfigured(f"{where}: '{key}' is required.")
    methods = spec["methods"]
    if not isinstance(methods, list | tuple) or not all(isinstance(m, str) for m in methods):
        raise ImproperlyConfigured(f"{where}['methods'] must be a list of delivery method aliases.")
    return EventType(
        name=name,
        category=str(spec["category"]),
        methods=tuple(methods),
        template=str(spec.get("template", name.replace(".", "_"))),
        critical=bool(spec.get("critical", False)),
        digestible=bool(spec.get("digestible", False)),
    )


class Catalogue:
    """The parsed, validated ``NOTIFLOW["EVENT_TYPES"]``; cached, reloaded on setting change."""

    def __init__(self) -> None:
        self._types: dict[str, EventType] | None = None

    @property
    def types(self) -> dict[str, EventType]:
        if self._types is None:
            self._types = {name: _parse(name, spec) for name, spec in notiflow_settings.EVENT_TYPES.items()}
        return self._types

    def get(self, name: str) -> EventType:
        """The entry for ``name``; raises :class:`UnknownEventType` naming close matches."""
        try:
            return self.types[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.types, n=3)
            hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise UnknownEventType(f"Unknown event type {name!r}.{hint}") from None

    def validate(self) -> None:
        """Check every entry, its delivery methods and its templates.

        Raises ``ImproperlyConfigured`` naming the first problem found.
        """
        for event_type in self.types.values():
            for alias in event_type.methods:
                if alias not in registry.aliases():
                    raise ImproperlyConfigured(
                        f"Event type {event_type.name!r} names delivery method {alias!r}, "
                        f"which is not in NOTIFLOW['DELIVERY_METHODS'] ({', '.join(registry.aliases())})."
                    )
            for part in ("title.txt", "body.txt"):
                try:
                    get_template(event_type.template_name(part))
                except TemplateDoesNotExist as exc:
                    raise ImproperlyConfigured(
                        f"Event type {event_type.name!r}: template {event_type.template_name(part)!r} not found."
                    ) from exc

    def reload(self) -> None:
        self._types = None


catalogue = Catalogue()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "NOTIFLOW":
        catalogue.reload()


setting_changed.connect(_reload)
