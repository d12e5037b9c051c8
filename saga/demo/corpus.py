"""The demo's real text: docstrings of the Python standard library, read with ``inspect``.

A code knowledge base has three kinds of entries, one table each: ``summaries`` (what a
module, class, function or method does), ``glossary`` (a term and its definition) and
``constraints`` (rule sentences such as "the key must be hashable"). The walk is in a
fixed order (modules as listed, members sorted by name), so a run with the same Python
writes the same records.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import re
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import attrs

from saga.demo.errors import DemoUsageError

MODULES = (
    "json",
    "os.path",
    "collections",
    "itertools",
    "functools",
    "pathlib",
    "textwrap",
    "string",
    "re",
    "shutil",
    "heapq",
    "bisect",
    "statistics",
    "contextlib",
    "datetime",
    "difflib",
    "operator",
    "fractions",
)
"""Walked in this order; the first ones alone give a few hundred entries."""

SNIPPET_CHARS = 280
"""Longest text stored for one entry (characters); longer text is cut at a word."""

# Sentences that state a rule, and how strong it is (first match wins).
_SEVERITY = (
    ("must", re.compile(r"\b(must|cannot|can't|never|required?)\b", re.IGNORECASE)),
    ("should", re.compile(r"\b(should|recommended|avoid)\b", re.IGNORECASE)),
    ("note", re.compile(r"\b(raises?|only|note)\b", re.IGNORECASE)),
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(`'\"])")
_TABLE_PATTERN = ("summaries", "glossary", "summaries", "constraints")
"""How entries of the three tables are interleaved: half are summaries."""


@attrs.frozen
class Record:
    """One knowledge-base entry: its row, and the text its vector is made from.

    ``text`` is stored as the row's text column and as the Chroma document;
    ``revised`` is a longer version of it, written by the demo's updates.
    """

    table: str
    key: str | int
    row: dict[str, Any]
    text_column: str
    text: str
    revised: str
    metadata: dict[str, str]

    @property
    def title(self) -> str:
        """A short human name for the entry (its key, or its subject for a rule)."""
        return str(self.row.get("subject", self.key))


def load(count: int) -> list[Record]:
    """The first ``count`` entries, the three tables interleaved.

    Raises ``DemoUsageError`` if the walked modules hold fewer than ``count`` entries.
    """
    entries = list(itertools.islice(_interleaved(), count))
    if len(entries) < count:
        raise DemoUsageError(
            f"the standard library walk yields {len(entries)} entries; ask for at most that"
        )
    return entries


def _interleaved() -> Iterator[Record]:
    """Entries in ``_TABLE_PATTERN`` order; a table that runs out is skipped."""
    sources = {
        "summaries": _summaries(),
        "glossary": _glossary(),
        "constraints": _constraints(),
    }
    live = dict(sources)
    for table in itertools.cycle(_TABLE_PATTERN):
        if not live:
            return
        if table not in live:
            continue
        entry = next(live[table], None)
        if entry is None:
            del live[table]
            continue
        yield entry


# -- the walk ------------------------------------------------------------------------


@attrs.frozen
class _Doc:
    qualname: str
    module: str
    kind: str
    doc: str


def _documented() -> Iterator[_Doc]:
    """Every documented module, public class, function and method, in a fixed order."""
    seen: set[str] = set()
    for name in MODULES:
        module = importlib.import_module(name)
        for doc in _module_docs(name, module):
            if doc.qualname not in seen:
                seen.add(doc.qualname)
                yield doc


def _module_docs(name: str, module: ModuleType) -> Iterator[_Doc]:
    text = inspect.getdoc(module)
    if text:
        yield _Doc(name, name, "module", text)
    for member in sorted(vars(module)):
        obj = getattr(module, member)
        if member.startswith("_") or not _defined_in(obj, name, module):
            continue
        kind = "class" if inspect.isclass(obj) else "function"
        text = inspect.getdoc(obj)
        if text:
            yield _Doc(f"{name}.{member}", name, kind, text)
        if kind == "class":
            yield from _method_docs(f"{name}.{member}", name, obj)


def _defined_in(obj: object, name: str, module: ModuleType) -> bool:
    """Classes and functions of this module (``functools.reduce`` lives in
    ``_functools``, ``os.path.join`` in ``posixpath``), not ones it merely imports."""
    if not (inspect.isclass(obj) or inspect.isroutine(obj)):
        return False
    return _package(str(getattr(obj, "__module__", "") or "")) in {
        _package(name),
        _package(module.__name__),
    }


def _package(module: str) -> str:
    """``_functools`` -> ``functools``, ``os.path`` -> ``os``."""
    return module.lstrip("_").split(".", maxsplit=1)[0]


def _method_docs(qualname: str, module: str, cls: type) -> Iterator[_Doc]:
    for member in sorted(vars(cls)):
        obj = getattr(cls, member, None)
        if member.startswith("_") or not inspect.isroutine(obj):
            continue
        text = inspect.getdoc(obj)
        if text:
            yield _Doc(f"{qualname}.{member}", module, "method", text)


# -- the three kinds of entries --------------------------------------------------------


def _summaries() -> Iterator[Record]:
    for doc in _documented():
        paragraphs = _paragraphs(doc.doc)
        text = _clip(paragraphs[0])
        yield Record(
            table="summaries",
            key=doc.qualname,
            row={"id": doc.qualname, "module": doc.module, "kind": doc.kind, "summary": text},
            text_column="summary",
            text=text,
            revised=_clip(" ".join(paragraphs[:3]), 2 * SNIPPET_CHARS),
            metadata={"module": doc.module, "kind": doc.kind},
        )


def _glossary() -> Iterator[Record]:
    terms: set[str] = set()
    for doc in _documented():
        term = doc.qualname.rsplit(".", 1)[-1] if doc.kind == "class" else doc.qualname
        if doc.kind not in ("module", "class") or term in terms:
            continue
        terms.add(term)
        sentences = _sentences(doc.doc)
        text = _clip(sentences[0])
        yield Record(
            table="glossary",
            key=term,
            row={"term": term, "definition": text, "source": doc.qualname},
            text_column="definition",
            text=text,
            revised=_clip(" ".join(sentences[:3]), 2 * SNIPPET_CHARS),
            metadata={"source": doc.qualname},
        )


def _constraints() -> Iterator[Record]:
    number = 0
    for doc in _documented():
        sentences = _sentences(doc.doc)
        for index, sentence in enumerate(sentences):
            severity = _severity(sentence)
            if severity is None or not _is_prose(sentence):
                continue
            number += 1
            context = " ".join(sentences[max(0, index - 1) : index + 2])
            yield Record(
                table="constraints",
                key=number,
                row={
                    "id": number,
                    "subject": doc.qualname,
                    "rule": sentence,
                    "severity": severity,
                },
                text_column="rule",
                text=sentence,
                revised=_clip(context, 2 * SNIPPET_CHARS),
                metadata={"subject": doc.qualname, "severity": severity},
            )


def _severity(sentence: str) -> str | None:
    for severity, pattern in _SEVERITY:
        if pattern.search(sentence):
            return severity
    return None


def _is_prose(sentence: str) -> bool:
    """A readable rule: not too short or long, and no doctest or code block in it."""
    return 20 <= len(sentence) <= SNIPPET_CHARS and "::" not in sentence and ">>>" not in sentence


def _paragraphs(doc: str) -> list[str]:
    found = [" ".join(p.split()) for p in re.split(r"\n\s*\n", doc)]
    return [p for p in found if p] or [" ".join(doc.split())]


def _sentences(doc: str) -> list[str]:
    flat = " ".join(doc.split())
    return [s for s in _SENTENCE_END.split(flat) if s] or [flat]


def _clip(text: str, limit: int = SNIPPET_CHARS) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0]
    return cut + "…"
