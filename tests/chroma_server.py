"""Run a real ``chroma run`` server in a subprocess for integration tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx


def free_port() -> int:
    """Return a loopback port that was free a moment ago.

    The OS picks it (bind to port 0); there is an unavoidable window before the server binds
    it in which someone else could take it, which is acceptable on a test machine.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ChromaServer:
    """A Chroma server persisting to ``path`` and listening on ``127.0.0.1:port``.

    Output goes to ``chroma-<port>.log`` next to ``path`` (appended across restarts), so a
    failing test can show what the server said.
    """

    host: str = "127.0.0.1"

    def __init__(self, path: Path, port: int | None = None) -> None:
        self.path = Path(path)
        self.port: int = port if port is not None else free_port()
        self.log_path = self.path.parent / f"chroma-{self.port}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> ChromaServer:
        """Launch the server and block until its heartbeat answers 200."""
        if self._proc is not None:
            raise RuntimeError("ChromaServer already started")
        # The console script of the interpreter running the tests, i.e. the same venv's chromadb.
        exe = Path(sys.executable).parent / "chroma"
        if not exe.exists():
            raise RuntimeError(f"chroma executable not found at {exe}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 -- must outlive this method
        cmd = [str(exe), "run", "--path", str(self.path)]
        cmd += ["--host", self.host, "--port", str(self.port)]
        # NO_COLOR keeps ANSI escapes out of the log, so log_tail() in errors is readable.
        env = {**os.environ, "ANONYMIZED_TELEMETRY": "False", "NO_COLOR": "1"}
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        deadline = time.monotonic() + timeout
        # trust_env=False: an HTTP(S)_PROXY in the environment must not intercept loopback polls.
        with httpx.Client(timeout=0.5, trust_env=False) as http:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    code = self._proc.returncode
                    self.stop()
                    raise RuntimeError(f"chroma exited with code {code}:\n{self.log_tail()}")
                try:
                    if http.get(f"{self.url}/api/v2/heartbeat").status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass  # not listening yet
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"chroma not healthy after {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Terminate (SIGTERM, which Chroma handles), escalate to SIGKILL after 10 s."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        """Stop and start again on the same port and data directory."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> ChromaServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
