"""Benchmarks: the library beside raw baselines running the same work in the same run.

``python -m bench`` runs every module (``make bench``); each module also runs alone, e.g.
``python -m bench.sqlite_bench --only a``. ``--json`` prints machine-readable results to stdout
(tables then go to stderr); ``--quick`` is a smoke run with small sizes.
"""
