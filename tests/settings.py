"""Test settings: the test settings plus a delivery method and event types defined only in tests."""

import os
from pathlib import Path

from webapp.settings.test import *  # noqa: F403
from webapp.settings.test import NOTIFLOW, TEMPLATES

# Templates of the test-only event types, for both engines (HTML and plain text).
for _engine in TEMPLATES:
    _engine["DIRS"] = [Path(__file__).parent / "support" / "templates"]

# Where the recording method writes (tests.environment puts it in the stack's folder); dropped pushes go beside it.
_RECORD = Path(os.environ.get("NOTIFLOW_TEST_RECORD", "/tmp/notiflow-recorded.jsonl"))

NOTIFLOW["DELIVERY_METHODS"] = {
    "email": {"BACKEND": "delivery.email.EmailMethod"},
    "websocket": {"BACKEND": "delivery.websocket.WebSocketMethod"},
    # A third-party method, added from settings alone: it proves the registry.
    "recording": {
        "BACKEND": "tests.support.methods.RecordingMethod",
        "OPTIONS": {"path": str(_RECORD)},
    },
    # Outcomes scripted by a unit test (tests/unit/pipeline/test_sending.py).
    "scripted": {"BACKEND": "tests.support.methods.ScriptedMethod"},
    # An inline method whose reach a unit test sets (tests/unit/pipeline/test_processing.py).
    "reachable": {"BACKEND": "tests.support.methods.ReachableMethod"},
    # The WebSocket push with every fifth push of each worker process dropped on purpose: recorded as sent,
    # never given to the channel layer (tests/integration/test_ordering.py: the relay fills the gaps).
    "websocket_lossy": {
        "BACKEND": "tests.support.methods.DroppingWebSocketMethod",
        "OPTIONS": {"path": str(_RECORD.with_name("dropped.jsonl"))},
    },
}
NOTIFLOW["EVENT_TYPES"] = {
    **NOTIFLOW["EVENT_TYPES"],
    "test.recorded": {"category": "tests", "methods": ["recording"], "template": "announcement_posted"},
    # The fault-injection drills (webapp/faults.py): email only; data {"run", "seq", "poison"?}.
    # A poison event's title includes a template that does not exist, so it cannot render.
    "test.fault": {"category": "tests", "methods": ["email"], "template": "fault"},
    # Its title reads the recipient (rendered per recipient); sent inline by the "reachable" method.
    "test.personal": {"category": "tests", "methods": ["reachable"], "template": "personal"},
    "test.critical": {
        "category": "critiques",
        "methods": ["websocket", "email"],
        "template": "critique_created",
        "critical": True,
        "digestible": True,
    },
    # A job's status changes (data {"job", "status"}), pushed to sockets: the ordering tests
    # (tests/integration/test_ordering.py); the lossy one through the dropping push.
    "test.job": {"category": "jobs", "methods": ["websocket"], "template": "job"},
    "test.job.lossy": {"category": "jobs", "methods": ["websocket_lossy"], "template": "job"},
}

# Short clocks, so that retries, the outbox relay and the recovery sweep act within a test's time.
NOTIFLOW["RETRY"] = {"BACKOFF_BASE": 0.5, "BACKOFF_CAP": 3.0, "MAX_ATTEMPTS": 100}
NOTIFLOW["OUTBOX_RELAY_AFTER"] = 2
NOTIFLOW["SWEEP_INTERVAL"] = 2
NOTIFLOW["RECOVER_AFTER"] = 10
NOTIFLOW["DELIVERY_LEASE"] = 30

# Tokens as an identity provider issues them: RS256/ES256 from its JWKS (tests.support.identity_provider,
# served by the test process), HS256 from notiflow itself; both must name this issuer and audience.
NOTIFLOW["JWT"].update(
    {
        "ALGORITHMS": ["HS256", "RS256", "ES256"],
        "JWKS_URL": os.environ.get("NOTIFLOW_TEST_JWKS_URL"),
        "ISSUER": "https://issuer.notiflow.test/",
        "AUDIENCE": "notiflow-tests",
        "ROLES_CLAIM": "roles",
    }
)
# Browsers may connect from the test server's own host, on any port; anything else is foreign. The relay
# checks its sockets' users and sessions every second (a deactivated user's socket closes within it).
NOTIFLOW["WEBSOCKET"] = {"ALLOWED_ORIGINS": ["localhost", "127.0.0.1"], "RESUME_LIMIT": 25, "REVALIDATE": 1.0}
NOTIFLOW_DEMO_PAGE = True
