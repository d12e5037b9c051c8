"""``python -m examples.knowledge_store [--db kg.db] [--chroma kg_chroma] [--summaries N]``

Writes N summaries, each with its constraints and terms as one atomic unit, revises
and removes a few, then searches. Run it, kill it at any moment, run ``saga recover
--db kg.db --chroma-path kg_chroma``: every summary is there with all its constraints,
or not at all.
"""

from __future__ import annotations

import argparse

from examples.knowledge_store.store import KnowledgeStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.knowledge_store")
    parser.add_argument("--db", default="kg.db")
    parser.add_argument("--chroma", default="kg_chroma")
    parser.add_argument("--summaries", type=int, default=20)
    args = parser.parse_args(argv)
    with KnowledgeStore.open(args.db, args.chroma) as store:
        for n in range(args.summaries):
            summary_id = store.add_summary(
                f"module {n}",
                f"module {n} parses input and writes records",
                [f"module {n} never writes partial records", f"module {n} validates input"],
                {f"term-{n}": f"what module {n} calls a record"},
            )
            print(f"summary {summary_id}: 2 constraints, 1 term", flush=True)
            if n % 5 == 4:
                store.revise_summary(summary_id, f"module {n} streams records", ["streams only"])
            if n % 7 == 6:
                store.remove_summary(summary_id)
        for row in store.search("constraints", "validates input"):
            print(f"constraint {row['id']} of summary {row['summary_id']}: {row['text']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
