"""A stand-in identity provider for the tests: RSA and EC keys, a JWKS served over real HTTP, signed tokens.

Auth0, Clerk and Cognito publish their public keys as a JSON Web Key Set at a
URL and sign RS256 (or ES256) tokens with ``kid`` headers; this does the same
from a thread of the test process, so the ASGI server verifies tokens exactly
as it would against a real provider (PyJWT's ``PyJWKClient`` over HTTP).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://issuer.notiflow.test/"
AUDIENCE = "notiflow-tests"


class IdentityProvider:
    """Keys ``rsa-1`` (RS256) and ``ec-1`` (ES256); :meth:`start` serves ``/.well-known/jwks.json``.

    ``requests`` counts the JWKS requests received; ``delay`` (seconds) slows each answer down, like a
    provider far away; ``failing`` answers 503 instead of the key set.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.keys: dict[str, tuple[str, Any]] = {
            "rsa-1": ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            "ec-1": ("ES256", ec.generate_private_key(ec.SECP256R1())),
        }
        self.requests = 0
        self.delay = 0.0
        self.failing = False
        self._count_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    def jwks(self) -> dict[str, Any]:
        found = []
        for kid, (alg, private) in list(self.keys.items()):
            encoder = RSAAlgorithm if alg.startswith("RS") else ECAlgorithm
            jwk = json.loads(encoder.to_jwk(private.public_key()))
            found.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})
        return {"keys": found}

    def add_key(self, kid: str) -> None:
        """A new RS256 key ``kid`` in the key set: what a provider does when it rotates its keys."""
        self.keys[kid] = ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def token(
        self, *, sub: Any, kid: str = "rsa-1", ttl: float = 300, header_kid: str | None = None, **claims: Any
    ) -> str:
        """A token signed by key ``kid``; ``iss``/``aud`` default to the test settings' (pass ``None`` to omit).

        ``header_kid`` puts another ``kid`` in the header (one the key set may not have) than the signing key's.
        """
        alg, private = self.keys[kid]
        now = int(time.time())
        body = {"sub": str(sub), "iat": now, "exp": now + ttl, "iss": ISSUER, "aud": AUDIENCE, **claims}
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, private, algorithm=alg, headers={"kid": header_kid or kid})

    def start(self) -> None:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/.well-known/jwks.json":
                    self.send_error(404)
                    return
                with provider._count_lock:
                    provider.requests += 1
                time.sleep(provider.delay)
                if provider.failing:
                    self.send_error(503)
                    return
                body = json.dumps(provider.jwks()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]  # the port the system chose when given 0
        threading.Thread(target=self._server.serve_forever, daemon=True, name="jwks").start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
