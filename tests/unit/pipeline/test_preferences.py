import pytest
from django.contrib.auth import get_user_model

from pipeline.catalogue import catalogue
from pipeline.models import Preference
from pipeline.preferences import (
    Decision,
    preferences_annotate,
    preferences_gathered,
    preferences_load,
    preferences_resolve,
)

pytestmark = pytest.mark.django_db


def prefer(user, method, setting, *, category="", event_type=""):
    Preference.objects.create(user=user, method=method, setting=setting, category=category, event_type=event_type)


def test_default_is_every_catalogue_method_now(users):
    plan = preferences_resolve(event_type=catalogue.get("critique.created"), user_ids=[users["bob"].pk])
    assert plan == {users["bob"].pk: {"websocket": Decision("now"), "email": Decision("now")}}


def test_category_off_skips_with_a_reason(users):
    prefer(users["dave"], "email", "off", category="critiques")
    plan = preferences_resolve(event_type=catalogue.get("critique.created"), user_ids=[users["dave"].pk])
    decision = plan[users["dave"].pk]["email"]
    assert decision.action == "skip"
    assert decision.reason == "preference: email off for category critiques"
    assert plan[users["dave"].pk]["websocket"] == Decision("now")


def test_event_type_preference_beats_category(users):
    prefer(users["dave"], "email", "off", category="critiques")
    prefer(users["dave"], "email", "on", event_type="critique.helpful")
    helpful = preferences_resolve(event_type=catalogue.get("critique.helpful"), user_ids=[users["dave"].pk])
    created = preferences_resolve(event_type=catalogue.get("critique.created"), user_ids=[users["dave"].pk])
    assert helpful[users["dave"].pk]["email"] == Decision("now")
    assert created[users["dave"].pk]["email"].action == "skip"


def test_digest_frequency_for_a_digestible_type(users):
    prefer(users["bob"], "email", "hourly", category="likes")
    plan = preferences_resolve(event_type=catalogue.get("like.created"), user_ids=[users["bob"].pk, users["alice"].pk])
    assert plan[users["bob"].pk]["email"] == Decision("digest", digest="hourly")
    assert plan[users["alice"].pk]["email"] == Decision("now")


def test_digest_frequency_on_a_method_without_digests_means_on(users):
    prefer(users["bob"], "websocket", "daily", category="likes")
    plan = preferences_resolve(event_type=catalogue.get("like.created"), user_ids=[users["bob"].pk])
    assert plan[users["bob"].pk]["websocket"] == Decision("now")


def test_critical_event_types_ignore_preferences(users):
    prefer(users["bob"], "email", "off", category="critiques")
    plan = preferences_resolve(event_type=catalogue.get("test.critical"), user_ids=[users["bob"].pk])
    assert plan[users["bob"].pk]["email"] == Decision("now")


def test_preferences_read_with_the_users_are_those_preferences_load_reads(users):
    """The hot path reads each recipient's preferences with the recipient (one query); they must be the same
    rows, for the same methods only, as preferences_load's second query."""
    bob, carol, dave = users["bob"], users["carol"], users["dave"]
    prefer(dave, "email", "off", category="critiques")
    prefer(dave, "email", "daily", event_type="critique.created")
    prefer(dave, "websocket", "off", category="critiques")
    prefer(carol, "sms", "off", category="critiques")  # a method not asked for
    ids, methods = [bob.pk, carol.pk, dave.pk], ["email", "websocket"]
    read = list(preferences_annotate(get_user_model().objects.filter(pk__in=ids), methods))

    gathered = preferences_gathered(read)

    loaded = preferences_load(user_ids=ids, methods=methods)
    assert {key: sorted(rows) for key, rows in gathered.items()} == {key: sorted(rows) for key, rows in loaded.items()}
    assert sorted(gathered[(dave.pk, "email")]) == [("", "critique.created", "daily"), ("critiques", "", "off")]
    assert (carol.pk, "sms") not in gathered and len(gathered) == 2
