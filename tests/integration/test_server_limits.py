"""daphne with limits (``python -m webapp.server``): slow and oversized clients are cut off, others are served.

A server of its own, on the session stack's database and Redis, with small
limits (1 s for headers, 1 s for a body, 2,000 bytes of body) so that the
slow clients here are bounded: each sends a byte every 0.2 s, which resets
Twisted's own idle timeout forever.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.support.ws import Socket
from webapp.stack import ROOT, Stack, free_port, wait_for
from webapp.tokens import token_issue

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

HEADER_TIMEOUT, BODY_TIMEOUT, MAX_BODY = 1.0, 1.0, 2000
DRIP = 0.2  # seconds between a slow client's bytes


@pytest.fixture(scope="module")
def server(stack: Stack) -> Iterator[tuple[str, int]]:
    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "webapp.server", "--header-timeout", str(HEADER_TIMEOUT)),
            *("--body-timeout", str(BODY_TIMEOUT), "--max-body-bytes", str(MAX_BODY)),
            *("-b", "127.0.0.1", "-p", str(port), "webapp.asgi:application"),
        ],
        cwd=ROOT,
        env={**os.environ, **stack.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _accepts("127.0.0.1", port), timeout=30)
        yield "127.0.0.1", port
    finally:
        process.terminate()
        process.wait(10)


def _accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def _drip(address: tuple[str, int], head: bytes, drip: bytes, *, seconds: float) -> tuple[bytes, float]:
    """Send ``head``, then ``drip`` a byte every :data:`DRIP` seconds for up to ``seconds``; return what the
    server answered and how long after ``head`` the connection was closed (``seconds`` if it never was)."""
    conn = socket.create_connection(address, timeout=5)
    conn.sendall(head)
    started, answer = time.monotonic(), b""
    try:
        for i in range(int(seconds / DRIP)):
            conn.settimeout(DRIP)
            try:
                chunk = conn.recv(4096)
            except TimeoutError:
                chunk = None
            if chunk == b"":
                return answer, time.monotonic() - started
            if chunk:
                answer += chunk
            conn.sendall(drip[i % len(drip) : i % len(drip) + 1])
    except (BrokenPipeError, ConnectionResetError):
        return answer, time.monotonic() - started
    finally:
        conn.close()
    return answer, seconds


def _request(address: tuple[str, int], raw: bytes) -> bytes:
    conn = socket.create_connection(address, timeout=10)
    try:
        conn.sendall(raw)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
        return answer
    finally:
        conn.close()


def test_a_request_whose_headers_trickle_in_is_cut_off_with_408(server):
    answer, closed_after = _drip(server, b"GET /admin/login/ HTTP/1.1\r\n", b"X-Slow: a\r\n", seconds=10)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert closed_after < HEADER_TIMEOUT + 1.0


def test_a_websocket_handshake_whose_headers_trickle_in_is_cut_off_with_408(server):
    head = b"GET /ws/notifications/ HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    answer, closed_after = _drip(server, head, b"X-Slow: a\r\n", seconds=10)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert closed_after < HEADER_TIMEOUT + 1.0


def test_a_body_that_trickles_in_is_cut_off_with_408(server):
    head = b"POST /api/token/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n"
    answer, closed_after = _drip(server, head, b"x", seconds=10)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert closed_after < BODY_TIMEOUT + 1.0


def test_a_declared_body_over_the_limit_is_refused_with_413_before_it_is_sent(server):
    head = f"POST /api/token/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: {10 * 1024**3}\r\n\r\n".encode()
    answer = _request(server, head)  # not a byte of the 10 GB is sent: the answer comes anyway
    assert answer.startswith(b"HTTP/1.1 413 ")


def test_a_chunked_body_is_cut_off_with_413_when_it_passes_the_limit(server):
    chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"
    head = b"POST /api/token/ HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
    conn = socket.create_connection(server, timeout=5)
    try:
        conn.sendall(head)
        answer = b""
        for _ in range(64):  # 64 KiB offered, 2,000 bytes allowed
            try:
                conn.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        conn.settimeout(5)
        while piece := conn.recv(4096):
            answer += piece
    except ConnectionResetError:
        pass
    finally:
        conn.close()
    assert answer.startswith(b"HTTP/1.1 413 ")


def test_requests_within_the_limits_are_served_and_a_websocket_outlives_the_header_timeout(server, users):
    host, port = server
    credentials = base64.b64encode(b"alice:pw").decode()
    body = b"{}"
    answer = _request(
        server,
        b"POST /api/token/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        + f"Authorization: Basic {credentials}\r\nContent-Type: application/json\r\n".encode()
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body,
    )
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["token"]  # the body reached the application

    async def websocket() -> None:
        ws = await Socket.open(f"ws://{host}:{port}/ws/notifications/", token=token_issue(user_id=users["bob"].pk))
        assert (await ws.next())["type"] == "hello"
        await asyncio.sleep(HEADER_TIMEOUT + BODY_TIMEOUT + 1.0)  # no deadline applies to an open socket
        await ws.send({"type": "ping"})
        assert (await ws.next())["type"] == "pong"
        await ws.ws.close()

    asyncio.run(websocket())
