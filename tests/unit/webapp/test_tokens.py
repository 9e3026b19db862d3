"""Token verification: HS256, RS256/ES256 through a JWKS over HTTP, issuer, audience, roles."""

from __future__ import annotations

import pytest

from tests.environment import IDENTITY_PROVIDER
from webapp.tokens import InvalidToken, token_issue, token_verify


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
