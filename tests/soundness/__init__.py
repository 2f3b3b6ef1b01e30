"""Soundness under attack (issue 5): the lying provers of :mod:`pocv.testing`, the catalogue
of attacks, measured detection, completeness across threads and implementations, bisection
disputes, and crash safety. Slow-marked tests hold the full-size runs (``pytest -m slow``)."""
