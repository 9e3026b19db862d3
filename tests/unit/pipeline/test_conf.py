import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from pipeline.conf import notiflow_settings


def test_unknown_key_fails_loudly():
    with override_settings(NOTIFLOW={"EVENT_TYPES": {}, "DELIVERY_METHOD": {}}):
        with pytest.raises(ImproperlyConfigured, match="DELIVERY_METHOD"):
            notiflow_settings.EVENT_TYPES  # noqa: B018


def test_unknown_jwt_key_fails_loudly():
    with override_settings(NOTIFLOW={"JWT": {"SECRETS": "x"}}):
        with pytest.raises(ImproperlyConfigured, match="SECRETS"):
            notiflow_settings.JWT  # noqa: B018


def test_defaults_fill_what_settings_leave_out():
    with override_settings(NOTIFLOW={"JWT": {"SECRET": "s"}}):
        assert notiflow_settings.JWT["ALGORITHMS"] == ["HS256"]
        assert notiflow_settings.MAX_EVENT_DATA_BYTES == 64 * 1024
        assert set(notiflow_settings.DELIVERY_METHODS) == {"email", "websocket"}
