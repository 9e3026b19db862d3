"""Token verification: HS256, RS256/ES256 through a JWKS over HTTP, issuer, audience, roles."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.environment import IDENTITY_PROVIDER
from tests.support.identity_provider import IdentityProvider
from webapp.tokens import Identity, InvalidToken, token_issue, token_verify


def test_a_token_notiflow_issues_is_verified_with_its_issuer_audience_and_expiry():
    identity = token_verify(token_issue(user_id=7, ttl=60, roles=["staff"]))
    assert identity.user_id == 7
    assert identity.roles == ("staff",)
    assert identity.expires_at is not None


@pytest.mark.parametrize("kid", ["rsa-1", "ec-1"])
def test_identity_provider_tokens_are_verified_against_its_jwks(kid):
    identity = token_verify(IDENTITY_PROVIDER.token(sub=42, kid=kid, roles=["editors"]))
    assert (identity.user_id, identity.roles) == (42, ("editors",))


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"aud": "someone-else"}, "(?i)audience"),
        ({"iss": "https://evil.example/"}, "(?i)issuer"),
        ({"iss": None}, "iss"),
        ({"ttl": -30}, "expired"),
        ({"roles": "admin"}, "roles"),
    ],
)
def test_wrong_claims_are_refused_with_the_reason(claims, message):
    ttl = claims.pop("ttl", 300)
    with pytest.raises(InvalidToken, match=message):
        token_verify(IDENTITY_PROVIDER.token(sub=1, ttl=ttl, **claims))


def test_an_algorithm_not_accepted_is_refused_before_any_key_is_fetched(settings):
    settings.NOTIFLOW = {**settings.NOTIFLOW, "JWT": {**settings.NOTIFLOW["JWT"], "ALGORITHMS": ["HS256"]}}
    before = IDENTITY_PROVIDER.requests
    with pytest.raises(InvalidToken, match="not accepted"):
        token_verify(IDENTITY_PROVIDER.token(sub=1, kid="ec-1"))
    assert IDENTITY_PROVIDER.requests == before


def _jwt_settings(settings: Any, **overrides: Any) -> None:
    settings.NOTIFLOW = {**settings.NOTIFLOW, "JWT": {**settings.NOTIFLOW["JWT"], **overrides}}


@pytest.fixture
def provider(settings: Any) -> Iterator[IdentityProvider]:
    """A provider of the test's own (a JWKS over real HTTP), so its request count starts at zero; a JWKS
    answer takes 0.2 s, so that concurrent verifications overlap one fetch."""
    idp = IdentityProvider(port=0)
    idp.delay = 0.2
    idp.start()
    _jwt_settings(settings, JWKS_URL=idp.jwks_url)
    yield idp
    idp.stop()


def _verified_or_refused(token: str) -> Identity | InvalidToken:
    try:
        return token_verify(token)
    except InvalidToken as refused:
        return refused


def test_twenty_unknown_kids_at_once_cost_at_most_one_jwks_fetch_and_a_known_kid_still_verifies(provider):
    junk = [provider.token(sub=1, header_kid=f"junk-{n}") for n in range(20)]
    with ThreadPoolExecutor(max_workers=20) as threads:
        outcomes = list(threads.map(_verified_or_refused, junk))
    assert all(isinstance(o, InvalidToken) for o in outcomes), outcomes
    assert [("junk-" in str(o)) for o in outcomes] == [True] * 20  # the refusal names the unknown kid
    assert provider.requests == 1  # the key set, fetched once for all twenty (it was not cached yet)
    identity = token_verify(provider.token(sub=42, kid="ec-1"))
    assert identity.user_id == 42
    assert provider.requests == 1  # from the cached key set


def test_a_new_kid_after_the_min_refetch_interval_triggers_one_refetch(provider, settings):
    _jwt_settings(settings, JWKS_URL=provider.jwks_url, JWKS_MIN_REFETCH=1.0)
    assert token_verify(provider.token(sub=1)).user_id == 1
    provider.add_key("rsa-2")  # the provider rotates its keys
    rotated = provider.token(sub=2, kid="rsa-2")
    with pytest.raises(InvalidToken, match="rsa-2"):
        token_verify(rotated)  # within the interval: remembered as unknown, no request
    assert provider.requests == 1
    time.sleep(1.05)
    assert token_verify(rotated).user_id == 2
    assert provider.requests == 2
    for n in range(5):
        with pytest.raises(InvalidToken, match=f"junk-{n}"):
            token_verify(provider.token(sub=1, header_kid=f"junk-{n}"))
    assert provider.requests == 2


def test_a_failing_jwks_is_asked_once_per_interval_and_the_keys_already_fetched_stay_in_use(provider, settings):
    _jwt_settings(settings, JWKS_URL=provider.jwks_url, JWKS_MIN_REFETCH=0.5)
    assert token_verify(provider.token(sub=1)).user_id == 1
    provider.failing = True
    time.sleep(0.55)
    for n in range(10):
        with pytest.raises(InvalidToken, match=f"junk-{n}"):
            token_verify(provider.token(sub=1, header_kid=f"junk-{n}"))
    assert provider.requests == 2  # one failed refetch, not ten
    assert token_verify(provider.token(sub=3, kid="ec-1")).user_id == 3
    assert provider.requests == 2
