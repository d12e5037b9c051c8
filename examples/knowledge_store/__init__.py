"""A small knowledge store on SQLite and Chroma, written with the saga library.

The application the library was made for: summaries (keys SQLite assigns), the
constraints each summary states (a foreign key to its summary) and a glossary (TEXT
keys), each row with its embedding in a Chroma collection of its own. Writing a
summary with its constraints and terms is one atomic unit: after any crash, and once
recovery has run, either all of it is in both stores or none of it is.
"""

from examples.knowledge_store.store import KnowledgeStore, embed

__all__ = ["KnowledgeStore", "embed"]
