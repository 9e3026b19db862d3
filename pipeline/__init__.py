"""notiflow's pipeline: ``emit_event()``, the event catalogue, the models and the Celery chain.

``emit_event`` and ``Audience`` are imported lazily so that importing this
package does not import models before Django's app registry is ready.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.events import Audience, emit_event

__all__ = ["Audience", "emit_event"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from pipeline import events

        return getattr(events, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
