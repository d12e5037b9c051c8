"""Who holds a saga's lease: ``host:pid:token``, and whether that holder still lives."""

from __future__ import annotations

import os
import socket
import uuid


def lease_owner_id() -> str:
    """``host:pid:token``: the host and pid let recovery see a dead owner at once."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
