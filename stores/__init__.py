"""Adapters: SQLite (connections, the saga log tables, migrations) and ChromaDB."""
