"""``persona bench``: the one speed benchmark (in-process cost, HTTP under load, the 2-core limit).

Modules: :mod:`bench.run` (the run and its options), :mod:`bench.load` (the one load generator:
wrk, or a raw-socket fallback), :mod:`bench.inprocess` (PersonaService and embedder costs),
:mod:`bench.report` (limit, targets, tables), :mod:`bench.stats` (the one percentile rule and the
memory samplers), :mod:`bench.workers` (``persona serve --workers N``), :mod:`bench.scale` (the
optional ingest part) and :mod:`bench.servers` (start and stop local servers; the tests use it too).

Dependencies go one way: ``bench`` imports ``retrieval``, ``ingest``, ``server`` and ``eval``
(for the question sets); none of those imports ``bench``.
"""
