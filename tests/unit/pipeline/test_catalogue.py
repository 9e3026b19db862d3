import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from pipeline.catalogue import catalogue
from pipeline.exceptions import UnknownEventType

OK = {"category": "c", "methods": ["email"], "template": "critique_created"}


def test_entries_are_parsed_with_defaults():
    spec = catalogue.get("like.created")
    assert spec.category == "likes"
    assert spec.methods == ("websocket", "email")
    assert spec.digestible and not spec.critical
    assert spec.template_name("title.txt") == "notiflow/events/like_created/title.txt"


def test_unknown_event_type_suggests_the_close_one():
    with pytest.raises(UnknownEventType, match=r"Did you mean 'like\.created'"):
        catalogue.get("like.create")


@pytest.mark.parametrize(
    ("name", "spec", "message"),
    [
        ("Bad Name", OK, "dotted lowercase"),
        ("a.b", {**OK, "colour": "red"}, "unknown key"),
        ("a.b", {"methods": ["email"]}, "'category' is required"),
        ("a.b", {**OK, "methods": "email"}, "list of delivery method aliases"),
        ("a.b", {**OK, "methods": ["sms"]}, "delivery method 'sms'"),
        ("a.b", {**OK, "template": "nope"}, "notiflow/events/nope/title.txt"),
    ],
)
def test_bad_entries_are_refused_at_start_up(name, spec, message):
    with override_settings(NOTIFLOW={"EVENT_TYPES": {name: spec}}):
        with pytest.raises(ImproperlyConfigured, match=message):
            catalogue.validate()
