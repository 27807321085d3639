"""The measuring tools, one room: each answers one question with printed figures, never a pass/fail timing.

    python -m bench.perf.speed       training step: the harness against the project's own bare loop
    python -m bench.perf.loader      DeviceLoader throughput alone
    python -m bench.perf.checkpoint  what a per-epoch checkpoint costs, per model
    python -m bench.perf.tracking    what MLflow tracking costs one trial, SQLite file against a `bench server`
    python -m bench.perf.tracking_load  N concurrent trials through one `bench server` (SQLite, PostgreSQL), and
                                     a kill -9 and restart of it mid-run: latency, rows lost and duplicated
    python -m bench.perf.startup     time from `bench run` to the first training step
    python -m bench.perf.chaos       a suite under random SIGKILLs of its workers: what was lost

They sit above every other layer (they drive training, tracking and whole runs), and nothing imports them.
"""
