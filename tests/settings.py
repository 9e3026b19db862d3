"""Test settings: the test settings plus a delivery method and event types defined only in tests."""

import os

from webapp.settings.test import *  # noqa: F403
from webapp.settings.test import NOTIFLOW

NOTIFLOW["DELIVERY_METHODS"] = {
    "email": {"BACKEND": "delivery.email.EmailMethod"},
    "websocket": {"BACKEND": "delivery.websocket.WebSocketMethod"},
    # A third-party method, added from settings alone: it proves the registry.
    "recording": {
        "BACKEND": "tests.support.methods.RecordingMethod",
        "OPTIONS": {"path": os.environ.get("NOTIFLOW_TEST_RECORD", "/tmp/notiflow-recorded.jsonl")},
    },
}
NOTIFLOW["EVENT_TYPES"] = {
    **NOTIFLOW["EVENT_TYPES"],
    "test.recorded": {"category": "tests", "methods": ["recording"], "template": "announcement_posted"},
    "test.critical": {
        "category": "critiques",
        "methods": ["websocket", "email"],
        "template": "critique_created",
        "critical": True,
        "digestible": True,
    },
}
