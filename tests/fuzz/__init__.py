"""Hostile input: property tests of every parser (``test_parsers.py``), the replayed crash
regressions (``regressions/``, ``test_regressions.py``) and the long fuzz run
(``python -m tests.fuzz.run --count 100000``)."""
