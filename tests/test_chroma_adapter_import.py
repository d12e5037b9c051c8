"""Importing the Chroma adapter changes nothing; building a store prepares it; a caller's
client is told apart (embedded or server) by the adapter itself."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import chromadb
import pytest
from chromadb.config import Settings

from saga import ChromaTimeouts, RetryPolicy
from stores.chroma import ChromaVectorStore
from tests.chroma_server import ChromaServer

pytest_plugins = ["tests.server_fixtures"]  # the module's real `chroma run`

ROOT = Path(__file__).resolve().parent.parent
KINDS = ["chroma-invalid", "chroma-timeout", "chroma-unavailable"]
TELEMETRY_LOGGER = "chromadb.telemetry.product.posthog"

# Run in a fresh interpreter: this one has long since imported the adapter and built
# stores. Prints what the import left behind, then what building a store did.
_PROBE = f"""
import json, logging, sys
import stores.chroma
from saga import failpoints
from saga._config import ChromaTimeouts, RetryPolicy

def seen():
    return {{
        "kinds": sorted(k for k in failpoints._error_kinds if k.startswith("chroma-")),
        "level": logging.getLogger({TELEMETRY_LOGGER!r}).level,
    }}

after_import = seen()
store = stores.chroma.ChromaVectorStore.embedded(
    sys.argv[1], retry=RetryPolicy(), timeouts=ChromaTimeouts()
)
try:
    print(json.dumps({{"after_import": after_import, "after_store": seen()}}))
finally:
    store.close()
"""


def test_importing_the_adapter_registers_nothing_until_a_store_is_built(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SAGA_FAILPOINTS"}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tmp_path / "chroma")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])

    assert seen["after_import"] == {"kinds": [], "level": logging.NOTSET}
    assert seen["after_store"] == {"kinds": KINDS, "level": logging.CRITICAL}


def test_a_persistent_client_of_the_caller_is_embedded_and_stays_open(tmp_path: Path) -> None:
    client = chromadb.PersistentClient(
        path=str(tmp_path / "chroma"), settings=Settings(anonymized_telemetry=False)
    )
    try:
        store = ChromaVectorStore.from_client(
            client, retry=RetryPolicy(), timeouts=ChromaTimeouts()
        )
        assert store.remote is False
        assert store.call_bound is None
        assert not store.session_bounded
        assert store.count("notes") == 0
        store.close()
        client.heartbeat()  # the caller's client is still theirs: not closed by the store
    finally:
        client.close()


@pytest.mark.chroma_server
def test_an_http_client_of_the_caller_is_remote_and_bounded(chroma_server: ChromaServer) -> None:
    client = chromadb.HttpClient(
        host=chroma_server.host,
        port=chroma_server.port,
        settings=Settings(anonymized_telemetry=False),
    )
    try:
        store = ChromaVectorStore.from_client(
            client, retry=RetryPolicy(), timeouts=ChromaTimeouts()
        )
        assert store.remote is True
        assert store.session_bounded
        assert store.call_bound is not None
        store.close()
        client.heartbeat()  # the caller's client is still theirs: not closed by the store
    finally:
        client.close()
