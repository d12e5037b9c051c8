"""Each FaultProxy mode, proven against a tiny local echo server (plus one real-Chroma test)."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import chromadb
import chromadb.config
import httpx
import pytest

from tests.chroma_server import ChromaServer
from tests.faultproxy import FaultProxy


class _EchoServer(socketserver.ThreadingTCPServer):
    """Echoes every chunk back and records what it received, so tests can see the upstream."""

    daemon_threads = True  # handlers blocked on a hung proxy must not delay server_close()
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EchoHandler)
        self.received = bytearray()
        self.got_data = threading.Event()


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = cast(_EchoServer, self.server)
        while data := self.request.recv(65536):
            server.received += data
            server.got_data.set()
            self.request.sendall(data)


@pytest.fixture
def echo() -> Iterator[_EchoServer]:
    server = _EchoServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(echo: _EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", echo.server_address[1]) as p:
        yield p


def _connect(proxy: FaultProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=2.0)


def _roundtrip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def _assert_dead(sock: socket.socket) -> None:
    """The connection was aborted: no data arrives and it cannot carry a request any more."""
    sock.settimeout(2.0)
    # Linux reports the SO_LINGER-0 abort as ECONNRESET; an orderly EOF would also be fine.
    with contextlib.suppress(ConnectionResetError):
        assert sock.recv(1024) == b""
    # A dead socket either refuses the send (EPIPE/ECONNRESET) or never echoes it back.
    with contextlib.suppress(OSError):
        sock.sendall(b"ping")
        assert sock.recv(1024) == b""


def test_pass_forwards_both_ways(proxy: FaultProxy, echo: _EchoServer) -> None:
    with _connect(proxy) as sock:
        assert _roundtrip(sock, b"hello") == b"hello"
    assert bytes(echo.received) == b"hello"
    assert proxy.connections_seen == 1


def test_latency_delays_each_direction(proxy: FaultProxy) -> None:
    latency = 0.2
    proxy.set_mode("latency", seconds=latency)
    with _connect(proxy) as sock:
        start = time.monotonic()
        assert _roundtrip(sock, b"slow") == b"slow"
        elapsed = time.monotonic() - start
    # Request and response are each delayed; the upper bound only guards against a hang.
    assert 2 * latency <= elapsed < 2 * latency + 1.5


def test_drip_answers_one_byte_at_a_time(proxy: FaultProxy) -> None:
    """The answer comes a byte every `seconds`: never silent for long, never done soon."""
    proxy.set_mode("drip", seconds=0.1)
    with _connect(proxy) as sock:
        sock.sendall(b"drip")
        sock.settimeout(0.5)  # longer than one gap, so no read times out
        start = time.monotonic()
        pieces = [sock.recv(65536) for _ in range(4)]
        elapsed = time.monotonic() - start
    assert pieces == [b"d", b"r", b"i", b"p"]
    assert 0.4 <= elapsed < 0.4 + 1.5


def test_hang_accepts_but_never_answers(proxy: FaultProxy, echo: _EchoServer) -> None:
    proxy.set_mode("hang")
    with _connect(proxy) as sock:
        sock.sendall(b"anyone there?")
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(1024)
    assert proxy.connections_seen == 1
    assert not echo.got_data.is_set()  # nothing was forwarded


def test_hang_applies_to_open_connections(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        assert _roundtrip(sock, b"one") == b"one"
        proxy.set_mode("hang")
        sock.sendall(b"two")
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(1024)


def test_reset_aborts_new_connections(proxy: FaultProxy) -> None:
    proxy.set_mode("reset")
    # The kernel completes the handshake before the proxy accepts, so connect() usually
    # succeeds and the RST shows up on first use; on a busy machine it can beat connect() back.
    try:
        sock = _connect(proxy)
    except ConnectionResetError:
        pass
    else:
        with sock:
            _assert_dead(sock)
    assert proxy.connections_seen == 1


def test_reset_aborts_open_connections(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        assert _roundtrip(sock, b"alive") == b"alive"
        proxy.set_mode("reset")
        _assert_dead(sock)


def test_down_refuses_then_recovers_on_same_port(proxy: FaultProxy) -> None:
    port = proxy.port
    with _connect(proxy) as open_sock:
        assert _roundtrip(open_sock, b"before") == b"before"
        proxy.set_mode("down")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2.0)
        _assert_dead(open_sock)  # a stopped server takes its connections with it
    proxy.set_mode("pass")
    assert proxy.port == port
    with _connect(proxy) as sock:
        assert _roundtrip(sock, b"after") == b"after"


def test_drop_response_applies_request_but_loses_answer(
    proxy: FaultProxy, echo: _EchoServer
) -> None:
    proxy.set_mode("drop_response")
    with _connect(proxy) as sock:
        sock.sendall(b"PUT /thing")
        assert echo.got_data.wait(2.0)
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(1024)  # the echo was sent upstream but never reaches us
    assert bytes(echo.received) == b"PUT /thing"


def test_set_mode_validates_arguments(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError):
        proxy.set_mode("flaky")
    with pytest.raises(TypeError):
        proxy.set_mode("hang", seconds=1.0)
    with pytest.raises(TypeError):
        proxy.set_mode("latency")


def test_stop_is_bounded_with_hung_connections(echo: _EchoServer) -> None:
    proxy = FaultProxy("127.0.0.1", echo.server_address[1]).start()
    proxy.set_mode("hang")
    socks = [_connect(proxy) for _ in range(5)]
    for sock in socks:
        sock.sendall(b"stuck")
    try:
        start = time.monotonic()
        proxy.stop()
        assert time.monotonic() - start < 2.5
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.chroma_server
def test_real_chroma_behind_proxy(tmp_path: Path) -> None:
    with (
        ChromaServer(tmp_path / "chroma") as server,
        FaultProxy(server.host, server.port) as proxy,
    ):
        client = chromadb.HttpClient(
            host="127.0.0.1",
            port=proxy.port,
            settings=chromadb.config.Settings(anonymized_telemetry=False),
        )
        assert client.heartbeat() > 0

        proxy.set_mode("down")
        # The pooled keep-alive connection may be reset under the first request (ReadError);
        # after that httpx must dial a fresh connection, which is refused.
        with pytest.raises(httpx.TransportError):
            client.heartbeat()
        with pytest.raises(httpx.ConnectError):
            client.heartbeat()

        proxy.set_mode("pass")
        assert client.heartbeat() > 0  # the same client object recovers on its own
