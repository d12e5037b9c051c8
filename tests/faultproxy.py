"""A tiny TCP fault-injection proxy for tests.

It sits between a client and a real server on loopback and, on demand, misbehaves the way
networks and servers really do, so retry/timeout logic can be exercised deterministically.
Stdlib only; one accept thread plus one thread per client connection, all daemons.
"""

from __future__ import annotations

import contextlib
import select
import selectors
import socket
import struct
import threading
import time
from types import TracebackType

MODES = frozenset({"pass", "latency", "hang", "reset", "down", "drop_response", "drip"})

# Every connection re-reads the mode at least this often, which bounds how quickly open
# connections react to set_mode() and how long stop() waits for them.
_POLL_SECONDS = 0.05
# Sends to a peer that stopped reading must not block a thread (and so stop()) forever.
_IO_TIMEOUT_SECONDS = 1.0
_CHUNK = 65536


def _rst_close(sock: socket.socket) -> None:
    """Close with a TCP RST instead of a FIN: linger on with timeout 0 aborts the connection."""
    with contextlib.suppress(OSError):  # already dead: a plain close is all that is left
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class FaultProxy:
    """Forward TCP from ``listen_host:port`` to an upstream, injecting the fault of the mode.

    Modes, switched at any time with :meth:`set_mode`:

    * ``"pass"`` -- transparent forwarding: the healthy network.
    * ``"latency"`` (``seconds=``) -- every chunk, in either direction, is held back that long:
      a slow link or an overloaded server. A request/response round trip costs >= 2 x seconds.
    * ``"hang"`` -- connections are accepted and client bytes are read and thrown away, but
      nothing is forwarded or answered: a black-holed route or a wedged server. Only a client
      timeout gets the caller out.
    * ``"reset"`` -- new and already-open client connections are aborted with a TCP RST:
      a crashed server process or a middlebox killing the flow.
    * ``"down"`` -- nothing listens any more (connection refused) and open connections are
      reset: the server is stopped. Leaving ``"down"`` re-binds the same port.
    * ``"drop_response"`` -- the request reaches the upstream, but the answer is discarded and
      the client hears nothing: "the write was applied but the ack was lost", the case that
      makes blind retries of non-idempotent requests unsafe.
    """

    def __init__(
        self, upstream_host: str, upstream_port: int, listen_host: str = "127.0.0.1"
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.listen_host = listen_host
        self.connections_seen: int = 0
        self._mode = "pass"
        self._latency = 0.0
        self._lock = threading.Lock()  # guards mode, listener and the counters
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        # Bind now so .port is known (and stable across "down") before start() is called.
        self._listener: socket.socket | None = self._bind(0)
        self.port: int = self._listener.getsockname()[1]

    def _bind(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # REUSEADDR lets "down" -> "pass" re-bind the port despite TIME_WAIT leftovers and an
        # old listener that the kernel has shut down but not yet freed.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.listen_host, port))
        sock.listen(64)
        return sock

    def _close_listener(self) -> None:
        """Stop listening *now*; the caller holds the lock."""
        assert self._listener is not None
        # close() alone is not enough: while the accept thread sits in select() the kernel
        # keeps the socket alive (and accepting) until that select() returns. shutdown() moves
        # it out of LISTEN at once, so the very next connect() is refused and the port re-binds.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._listener = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        thread = threading.Thread(target=self._accept_loop, name="faultproxy-accept", daemon=True)
        self._threads.append(thread)
        thread.start()
        return self

    def stop(self) -> None:
        """Close the listener and every connection; returns within ~2 s whatever the peers do."""
        self._stopping.set()
        with self._lock:
            if self._listener is not None:
                self._close_listener()
            threads = list(self._threads)
        deadline = time.monotonic() + 2.0
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- control -----------------------------------------------------------------------------

    def set_mode(self, mode: str, **params: float) -> None:
        """Switch mode; takes effect for new data at once and for open connections within 50 ms."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {sorted(MODES)}")
        if mode in ("latency", "drip") and "seconds" not in params:
            raise TypeError(f"mode {mode!r} needs seconds=<float>")
        latency = float(params.pop("seconds")) if mode in ("latency", "drip") else 0.0
        if params:
            raise TypeError(f"unexpected parameters for mode {mode!r}: {sorted(params)}")
        with self._lock:
            self._mode, self._latency = mode, latency
            # Done here, synchronously, so a connect() right after set_mode("down") is refused.
            if mode == "down" and self._listener is not None:
                self._close_listener()
            elif mode != "down" and self._listener is None and not self._stopping.is_set():
                self._listener = self._bind(self.port)

    # -- workers -----------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                listener = self._listener
            if listener is None:  # "down": nothing to accept on until the mode changes
                self._stopping.wait(_POLL_SECONDS)
                continue
            try:
                # A short wait so a listener closed by set_mode()/stop() is noticed. poll,
                # not select: select() refuses descriptors >= 1024, which a long test run
                # reaches (embedded Chroma clients hold many).
                poller = select.poll()
                poller.register(listener, select.POLLIN)
                if not poller.poll(_POLL_SECONDS * 1000):
                    continue
                client, _ = listener.accept()
            except (OSError, ValueError):
                continue  # the listener was closed under us; re-read the state
            with self._lock:
                self.connections_seen += 1
                mode = self._mode
                self._threads = [t for t in self._threads if t.is_alive()]
            if mode in ("reset", "down"):
                _rst_close(client)
                continue
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            with self._lock:
                self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        """Pump one client connection, re-checking the mode between chunks."""
        client.settimeout(_IO_TIMEOUT_SECONDS)
        upstream: socket.socket | None = None  # connected lazily: "hang" never touches upstream
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ)
        try:
            while not self._stopping.is_set():
                with self._lock:
                    mode, delay = self._mode, self._latency
                if mode in ("reset", "down"):
                    _rst_close(client)
                    return
                for key, _ in sel.select(_POLL_SECONDS):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    data = sock.recv(_CHUNK)
                    if sock is client:
                        if not data:
                            return  # client closed; nothing more to forward
                        if mode == "hang":
                            continue
                        if upstream is None:
                            upstream = socket.create_connection(
                                self.upstream, timeout=_IO_TIMEOUT_SECONDS
                            )
                            sel.register(upstream, selectors.EVENT_READ)
                        if mode == "latency":
                            self._stopping.wait(delay)  # an Event, so stop() cuts it short
                        upstream.sendall(data)
                    elif mode in ("hang", "drop_response"):
                        if not data:
                            # Upstream hung up, but the client must keep hearing nothing
                            # (no FIN either), so only the upstream side is closed.
                            sel.unregister(sock)
                            sock.close()
                            upstream = None
                    elif not data:
                        return  # upstream closed: pass the close on to the client
                    elif mode == "drip":
                        # One byte every `delay` seconds: never silent for a whole read
                        # timeout, so only a whole-call deadline ends the call.
                        for byte in range(len(data)):
                            if self._stopping.wait(delay):
                                return
                            client.sendall(data[byte : byte + 1])
                    else:
                        if mode == "latency":
                            self._stopping.wait(delay)
                        client.sendall(data)
        except OSError:
            # Upstream refused, a peer vanished or stopped reading: abort loudly, never a
            # clean EOF that a client could mistake for a complete response.
            _rst_close(client)
        finally:
            sel.close()
            client.close()
            if upstream is not None:
                upstream.close()
