"""Benchmarks: the price of the saga against the unprotected dual write and the
tools a user would pick instead (LangChain's ``index()``, a DBOS workflow).

Run ``python -m bench`` (``--help`` for the options). Nothing here is imported by the
library or its tests; LangChain and DBOS are optional (the ``bench`` extra) and their
scenarios are skipped, with the reason printed, when they are not installed.
"""
