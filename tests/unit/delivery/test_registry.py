import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from delivery.email import EmailMethod
from delivery.registry import methods
from pipeline.exceptions import UnknownDeliveryMethod
from tests.support.methods import RecordingMethod


def test_methods_resolve_from_settings_and_are_cached():
    assert isinstance(methods.get("email"), EmailMethod)
    assert methods.get("email") is methods.get("email")
    assert isinstance(methods.get("recording"), RecordingMethod)  # defined only in the tests


def test_queue_per_method():
    assert methods.queue("email") == "deliver.email"
    assert methods.queue("websocket") == "deliver.websocket"
    assert "deliver.recording" in methods.queues()


def test_unknown_alias_names_it_and_suggests():
    with pytest.raises(UnknownDeliveryMethod, match=r"'emial'.*Did you mean 'email'"):
        methods.get("emial")


def test_bad_path_names_alias_and_path():
    config = {"DELIVERY_METHODS": {"sms": {"BACKEND": "nowhere.SmsMethod"}}}
    with override_settings(NOTIFLOW=config):
        with pytest.raises(ImproperlyConfigured, match=r"'sms'.*'nowhere.SmsMethod'"):
            methods.get("sms")


def test_a_class_that_is_not_a_method_is_refused():
    config = {"DELIVERY_METHODS": {"x": {"BACKEND": "collections.OrderedDict"}}}
    with override_settings(NOTIFLOW=config):
        with pytest.raises(ImproperlyConfigured, match=r"not a delivery\.base\.DeliveryMethod"):
            methods.get("x")


def test_retry_policy_merges_per_method_overrides():
    config = {"DELIVERY_METHODS": {"email": {"BACKEND": "delivery.email.EmailMethod", "RETRY": {"MAX_ATTEMPTS": 2}}}}
    with override_settings(NOTIFLOW=config):
        assert methods.retry_policy("email") == {"BACKOFF_BASE": 5.0, "BACKOFF_CAP": 600.0, "MAX_ATTEMPTS": 2}
