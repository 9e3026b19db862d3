"""The delivery method registry, read from ``NOTIFLOW["DELIVERY_METHODS"]``.

Settings map an alias to a dotted path plus options, as Channels' channel
layers do::

    "DELIVERY_METHODS": {
        "email": {"BACKEND": "delivery.email.EmailMethod"},
        "webhook": {"BACKEND": "myapp.notify.WebhookMethod", "OPTIONS": {"url": "..."},
                    "QUEUE": "deliver.webhook"},
    }

``QUEUE`` defaults to ``deliver.<alias>``; ``RETRY`` overrides keys of
``NOTIFLOW["RETRY"]`` for this method. Methods are imported lazily and
cached; an unknown alias or a bad path raises an error naming both.

The registry reads ``settings.NOTIFLOW`` itself, with the defaults below
(``pipeline.conf`` takes its defaults from here): delivery methods sit under
the pipeline and never import it.
"""

from __future__ import annotations

import difflib
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from delivery.base import DeliveryMethod

_ENTRY_KEYS = frozenset({"BACKEND", "OPTIONS", "QUEUE", "RETRY"})

#: ``NOTIFLOW["DELIVERY_METHODS"]`` when the project sets none.
DEFAULT_METHODS: dict[str, dict[str, Any]] = {
    "email": {"BACKEND": "delivery.email.EmailMethod"},
    "websocket": {"BACKEND": "delivery.websocket.WebSocketMethod"},
}
#: ``NOTIFLOW["RETRY"]`` when the project sets none: seconds, seconds, attempts (see ``pipeline.conf``).
DEFAULT_RETRY: dict[str, float] = {"BACKOFF_BASE": 5.0, "BACKOFF_CAP": 600.0, "MAX_ATTEMPTS": 10}


class UnknownDeliveryMethod(LookupError):
    """A delivery method alias is not in ``NOTIFLOW["DELIVERY_METHODS"]``."""


def _notiflow(key: str, default: Any) -> Any:
    return getattr(settings, "NOTIFLOW", {}).get(key, default)


class MethodRegistry:
    def __init__(self) -> None:
        self._instances: dict[str, DeliveryMethod] = {}

    def _config(self) -> dict[str, dict[str, Any]]:
        config: dict[str, dict[str, Any]] = _notiflow("DELIVERY_METHODS", DEFAULT_METHODS)
        return config

    def aliases(self) -> list[str]:
        """Every configured alias, in settings order."""
        return list(self._config())

    def entry(self, alias: str) -> dict[str, Any]:
        config = self._config()
        if alias not in config:
            close = difflib.get_close_matches(alias, config, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownDeliveryMethod(
                f"Unknown delivery method {alias!r}; NOTIFLOW['DELIVERY_METHODS'] has {', '.join(config)}.{hint}"
            )
        entry = config[alias]
        unknown = sorted(set(entry) - _ENTRY_KEYS)
        if unknown or "BACKEND" not in entry:
            raise ImproperlyConfigured(
                f"NOTIFLOW['DELIVERY_METHODS'][{alias!r}] needs 'BACKEND' and may have 'OPTIONS', 'QUEUE', 'RETRY'"
                f"{'; unknown: ' + ', '.join(unknown) if unknown else ''}."
            )
        return entry

    def get(self, alias: str) -> DeliveryMethod:
        """The cached method instance for ``alias``.

        Raises :class:`UnknownDeliveryMethod` for an unknown alias and
        ``ImproperlyConfigured`` for a path that does not import or is not a
        :class:`DeliveryMethod`.
        """
        if alias not in self._instances:
            entry = self.entry(alias)
            try:
                cls = import_string(entry["BACKEND"])
            except ImportError as exc:
                raise ImproperlyConfigured(
                    f"Delivery method {alias!r}: cannot import {entry['BACKEND']!r} ({exc})."
                ) from exc
            if not (isinstance(cls, type) and issubclass(cls, DeliveryMethod)):
                raise ImproperlyConfigured(
                    f"Delivery method {alias!r}: {entry['BACKEND']!r} is not a delivery.base.DeliveryMethod subclass."
                )
            instance = cls(alias=alias, options=entry.get("OPTIONS", {}))
            instance.check()
            self._instances[alias] = instance
        return self._instances[alias]

    def queue(self, alias: str) -> str:
        """The Celery queue that carries ``alias``'s delivery tasks."""
        return str(self.entry(alias).get("QUEUE", f"deliver.{alias}"))

    def retry_policy(self, alias: str) -> dict[str, float]:
        """``{"BACKOFF_BASE": s, "BACKOFF_CAP": s, "MAX_ATTEMPTS": n}`` for ``alias``."""
        policy: dict[str, float] = {**_notiflow("RETRY", DEFAULT_RETRY), **self.entry(alias).get("RETRY", {})}
        return policy

    def queues(self) -> list[str]:
        return sorted({self.queue(alias) for alias in self.aliases()})

    def validate(self) -> None:
        """Import and check every configured method; raise on the first bad one."""
        for alias in self.aliases():
            self.get(alias)

    def reload(self) -> None:
        self._instances.clear()


methods = MethodRegistry()
