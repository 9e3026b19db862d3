"""Presence: a push goes only to users with a socket open, so a role announcement costs work per socket."""

import pytest
import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from delivery.websocket import NO_SOCKET, PRESENCE_FROM, PRESENCE_KEY
from pipeline import Audience, emit_event
from pipeline.models import Delivery
from webapp.realtime.client import Listener, ListenerGroup
from webapp.stack import wait_for
from webapp.tokens import token_issue

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("size", [30, 2 * PRESENCE_FROM], ids=["group-members-read", "presence-read"])
def test_a_role_announcement_is_pushed_to_the_connected_members_only_once_per_socket(users, connect, size):
    """Below PRESENCE_FROM recipients per batch the pushes' groups tell who has a socket; from it on, presence
    (read before any push is built). Either way: each socket once, the rest skipped for want of one."""
    role = Group.objects.create(name="presence-role")
    members = [users["bob"], users["carol"]]
    members += [get_user_model().objects.create_user(username=f"member{n}", password="pw") for n in range(size - 2)]
    role.user_set.add(*members)
    sockets = connect(bob=users["bob"], carol=users["carol"], carol_again=users["carol"])  # carol: two tabs

    event_id = emit_event(event_type="announcement.posted", audience=Audience.role(role.name), data={"text": "hi"})

    deliveries = Delivery.objects.filter(notification__event_id=event_id, method="websocket")
    done = deliveries.filter(status__in=["sent", "skipped"])
    assert wait_for(lambda: done.count() == size), list(deliveries.values_list("status", "reason"))
    assert deliveries.filter(status="sent").count() == 2  # bob and carol: one channel-layer send each
    assert set(deliveries.filter(status="skipped").values_list("reason", flat=True)) == {NO_SOCKET}
    assert deliveries.filter(status="skipped").count() == size - 2
    for name in ("bob", "carol", "carol_again"):  # every socket once, carol's two tabs included
        pushes = wait_for(lambda name=name: sockets[name].notifications())
        assert [p["event_id"] for _, p in pushes] == [str(event_id)]


def test_a_socket_that_closes_is_no_longer_counted(users, stack):
    dave = users["dave"]
    url = f"{stack.ws_url}/ws/notifications/"
    group = ListenerGroup([Listener(name="dave", url=url, token=token_issue(user_id=dave.pk, ttl=300))])
    presence = redis.Redis.from_url(settings.CHANNEL_LAYER_REDIS_URL)
    group.start()
    try:
        assert wait_for(lambda: presence.hget(PRESENCE_KEY, str(dave.pk)) == b"1")
    finally:
        group.stop()
    assert wait_for(lambda: presence.hget(PRESENCE_KEY, str(dave.pk)) is None)
