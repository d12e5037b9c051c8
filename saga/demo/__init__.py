"""``saga demo``: the library's story, end to end, on the embedded default.

A code knowledge base (tables ``summaries``, ``glossary``, ``constraints``) writes real
text (standard library docstrings) with a deterministic embedder, suffers Chroma and
SQLite failures and SIGKILLed workers, and ends with recovery, a clean reconcile, a
semantic query and drawn state diagrams. ``run_demo`` is the whole of it; the CLI
command only parses its flags and turns the summary into an exit code.
"""

from saga.demo.errors import DemoUsageError
from saga.demo.plan import MIN_RECORDS
from saga.demo.story import DEFAULT_RECORDS, run_demo
from saga.demo.summary import DemoSummary

__all__ = ["DEFAULT_RECORDS", "MIN_RECORDS", "DemoSummary", "DemoUsageError", "run_demo"]
