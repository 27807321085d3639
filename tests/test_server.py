"""`bench server` as a cluster runs it: bad stores refused cleanly, a real PostgreSQL store, basic auth, and the
load/restart benchmark at a small size.

Every server and database here is started by this module on 127.0.0.1 and stopped by its PID (process groups of
the `bench server` tree; `pg_ctl stop` on the PostgreSQL data directory), in a finally.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from bench import server, track
from bench.perf import tracking_load as load
from tests.fixtures_cluster import bench_env, free_ports

REPO = Path(__file__).resolve().parent.parent


def _bench(args, cwd, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env or bench_env())


# ---- bad input -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("store, says", [
    ("postgresql://u@h:notaport/db", "malformed --store URI"),
    ("oracle://u@h/db", "MLflow stores runs in sqlite, postgresql"),
    ("postgresql+psycopg2://u@h/db", "psycopg2 is not installed"),
    ("postgresql://bench:s3cret@127.0.0.1:{port}/mlflow", "cannot connect to database"),
])
def test_bad_store_is_one_line_and_leaves_nothing(tmp_path, store, says):
    store = store.format(port=free_ports(1)[0])
    t = time.time()
    r = _bench(["server", "--store", store, "--port", str(free_ports(1)[0]), "--auth"], tmp_path, timeout=60)
    assert r.returncode == 2 and time.time() - t < 30
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error: ") and says in lines[0], r.stderr
    assert "s3cret" not in r.stderr
    assert list(tmp_path.iterdir()) == []       # no mlartifacts, no credentials


def test_plain_postgresql_uri_gets_an_installed_driver():
    pytest.importorskip("psycopg")
    uri = server.database_uri("postgresql://bench@db/mlflow")
    from sqlalchemy.engine import make_url

    assert make_url(uri).get_dialect().driver in ("psycopg", "psycopg2")


# ---- auth: the credentials file ------------------------------------------------------------------------------------

def test_credentials_are_private_made_once_and_reused(tmp_path):
    env, creds = server.ensure_auth(tmp_path)
    assert creds == tmp_path / "credentials" and stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / server.AUTH_DB).stat().st_mode) == 0o600
    c = server.read_credentials(creds)
    assert c["MLFLOW_TRACKING_USERNAME"] == "admin" and len(c["MLFLOW_TRACKING_PASSWORD"]) >= 24
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == c["MLFLOW_TRACKING_PASSWORD"]
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == str(tmp_path / server.AUTH_CONFIG)
    ini = (tmp_path / server.AUTH_CONFIG).read_text()
    assert c["MLFLOW_TRACKING_PASSWORD"] not in ini and f"sqlite:///{tmp_path / server.AUTH_DB}" in ini
    again, _ = server.ensure_auth(tmp_path)
    assert again["MLFLOW_AUTH_ADMIN_PASSWORD"] == c["MLFLOW_TRACKING_PASSWORD"]

    creds.chmod(0o644)
    with pytest.raises(server.ServerError, match="readable by others"):
        server.ensure_auth(tmp_path)
    creds.unlink()
    with pytest.raises(server.ServerError, match="credentials is gone"):
        server.ensure_auth(tmp_path)


def test_a_submitted_job_gets_the_credentials_in_its_env_only_when_set(monkeypatch):
    from bench.run import jobs

    sent = []

    class FakeJobs:
        def submit_job(self, **kw):
            sent.append(kw["runtime_env"]["env_vars"])

    monkeypatch.setattr(jobs, "client", lambda addr: FakeJobs())
    monkeypatch.setattr(jobs, "resolve_address", lambda addr: "http://127.0.0.1:8265")
    for k in track.CREDENTIAL_VARS:
        monkeypatch.delenv(k, raising=False)

    def submit():
        assert jobs.submit("quickstart", profile="smoke", dataset=None, seeds=None, cells=None, storage=None,
                           tracking_uri="http://head:5000", address=None, wait=False, out=lambda *_: None) == 0

    submit()
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw")
    submit()
    assert not set(track.CREDENTIAL_VARS) & set(sent[0])
    assert sent[1]["MLFLOW_TRACKING_USERNAME"] == "admin" and sent[1]["MLFLOW_TRACKING_PASSWORD"] == "pw"


# ---- auth: a real server -------------------------------------------------------------------------------------------

def _no_creds_env():
    return {k: v for k, v in bench_env().items() if k not in track.CREDENTIAL_VARS}


@pytest.mark.slow
def test_authenticated_server_refuses_anonymous_requests(tmp_path):
    store = tmp_path / "store"
    srv = load.Server(str(store), tmp_path, workers=1, extra=("--auth",), env=_no_creds_env())
    try:
        srv.start()
        log = (tmp_path / "server.log").read_text()
        pw = server.read_credentials(store / "credentials")["MLFLOW_TRACKING_PASSWORD"]
        assert f"{store / 'credentials'}" in log and pw not in log
        api = f"{srv.url}/api/2.0/mlflow/experiments"
        r = requests.post(f"{api}/create", json={"name": "intruder"}, timeout=30)
        assert r.status_code == 401
        r = requests.post(f"{api}/create", json={"name": "intruder"}, auth=("admin", "wrong-password"), timeout=30)
        assert r.status_code == 401
        r = requests.get(f"{api}/get-by-name", params={"experiment_name": "intruder"}, auth=("admin", pw), timeout=30)
        assert r.status_code == 404        # neither request created it

        t = time.time()
        anon = _bench(["run", "quickstart", "--profile", "smoke", "--tracking-uri", srv.url], tmp_path,
                      env=_no_creds_env())
        assert anon.returncode != 0 and "needs credentials" in anon.stderr and time.time() - t < 60, anon.stderr
        assert "Ray" not in anon.stdout
    finally:
        srv.stop()


# ---- PostgreSQL (with auth: one suite run serves both) --------------------------------------------------------------

@pytest.fixture(scope="module")
def pg():
    pytest.importorskip("psycopg", reason="the PostgreSQL driver is the bench[postgres] extra")
    try:
        with load.temporary_postgres(("mlflow",)) as (base, createdb):
            yield base, createdb
    except load.PostgresUnavailable as e:
        pytest.skip(str(e))


def test_a_database_password_stays_off_the_command_line(pg, tmp_path, monkeypatch):
    base, createdb = pg
    monkeypatch.chdir(tmp_path)
    uri = createdb("pw").replace("postgres@", "postgres:s3cret@")      # trust auth: any password is accepted
    cmd, env, _ = server.prepare("127.0.0.1", 5000, uri)
    assert "s3cret" not in " ".join(cmd) and "s3cret" in env["MLFLOW_BACKEND_STORE_URI"]


@pytest.mark.slow
def test_suite_through_an_authenticated_server_on_postgresql_and_its_report(pg, tmp_path):
    """The README's form of the URI (postgresql://user@host/db) behind --auth: the smoke quickstart with the
    credentials from the server's file, its report; and a log_batch replayed after it committed (a reply lost to a
    restart) adds no row in PostgreSQL, while the same values under a new timestamp would."""
    import pyarrow.parquet as pq
    import sqlalchemy
    from mlflow.entities import Metric

    base, _ = pg
    uri = base + "mlflow"
    srv = load.Server(uri, tmp_path, workers=1, extra=("--auth",), env=_no_creds_env())
    try:
        srv.start()
        creds = server.read_credentials(tmp_path / "credentials")     # a database store: beside the server
        env = {**_no_creds_env(), **creds}
        run = _bench(["run", "quickstart", "--profile", "smoke", "--num-cpus", "2", "--tracking-uri", srv.url,
                      "--storage", str(tmp_path / "state")], tmp_path, env=env)
        assert run.returncode == 0 and "8 finished, 0 failed" in run.stdout, run.stdout[-2000:] + run.stderr[-2000:]
        rep = _bench(["report", "quickstart", "--profile", "smoke", "--tracking-uri", srv.url, "--out",
                      str(tmp_path / "rep")], tmp_path, env=env)
        assert rep.returncode == 0, rep.stderr
        assert pq.read_table(tmp_path / "rep" / "runs.parquet").num_rows == 8
        anon = _bench(["report", "quickstart", "--tracking-uri", srv.url], tmp_path, env=_no_creds_env())
        assert anon.returncode != 0 and "needs credentials" in anon.stderr

        os.environ.update(creds)
        try:
            exp = track.ensure_experiment(srv.url, "replay")
            c = track.client(srv.url)
            rid = c.create_run(exp).info.run_id
            batch = [Metric("a", 1.0, 1000, 1), Metric("b", 2.0, 1000, 1)]
            c.log_batch(rid, metrics=batch)
            c.log_batch(rid, metrics=batch)                        # the same objects again: what a retry sends
            c.log_batch(rid, metrics=[Metric("a", 1.0, 2000, 1)])  # a new timestamp is a new row: hence fixed ones
        finally:
            for k in creds:
                os.environ.pop(k, None)
        eng = sqlalchemy.create_engine(server.database_uri(uri), poolclass=sqlalchemy.pool.NullPool)
        with eng.connect() as con:
            rows = con.execute(sqlalchemy.text("SELECT key, count(*) FROM metrics WHERE run_uuid = :r GROUP BY key"),
                               {"r": rid}).all()
            trial_runs = con.execute(sqlalchemy.text(
                "SELECT count(*) FROM tags WHERE key = 'bench.kind' AND value = 'trial'")).scalar()
        eng.dispose()
        assert dict(rows) == {"a": 2, "b": 1} and trial_runs == 8
    finally:
        srv.stop()
    assert (tmp_path / "mlartifacts").is_dir()


@pytest.mark.parametrize("msg", [
    # a server killed mid-answer (the write may have committed: replaying it is safe)
    "API request to http://127.0.0.1:1/api/2.0/mlflow/runs/log-batch failed with exception ('Connection broken: "
    "IncompleteRead(0 bytes read, 2 more expected)', IncompleteRead(0 bytes read, 2 more expected))",
    # an overloaded server whose workers' connection pools ran dry (MLflow answers 400)
    "BAD_REQUEST: QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 30.00",
])
def test_what_the_load_benchmark_found_is_retried(msg):
    from mlflow.exceptions import MlflowException

    assert track.transient(MlflowException(msg))
    assert not track.transient(MlflowException("RESOURCE_DOES_NOT_EXIST: Run 'x' not found"))


# ---- the load and restart benchmark, small ------------------------------------------------------------------------

def _small(tmp_path, **kw):
    cfg = load.Config(epochs=kw.pop("epochs", 6), checkpoint_kb=64, epoch_s=0.5, retry_s=kw.pop("retry_s", None))
    return load.run_load("sqlite", 4, cfg, store=str(tmp_path / "store"), workdir=tmp_path, procs=0,
                         server_workers=1, log=lambda *_: None, **kw)


@pytest.mark.slow
def test_kill_and_restart_mid_run_loses_and_duplicates_nothing(tmp_path):
    r = _small(tmp_path, restart_at=1.5)
    print(f"\nrestart: down {r.restart['down_s']:.1f} s, retries {r.retries}, epoch log max {max(r.epoch_s):.1f} s")
    assert not r.failed, r.failed
    assert r.counts["runs"] == r.counts["finished"] == 4 and r.counts["run_dups"] == 0
    assert r.counts["distinct"] == r.acked_rows == r.expected_rows == 4 * (6 * 8 + 4) and r.counts["dup_rows"] == 0
    assert r.lost_rows == 0
    assert r.checkpoints == 4 * 6 and r.ok()
    assert r.retries > 0 and r.restart["down_s"] > 0
    assert load.row(r).startswith("| sqlite | 4 |")


@pytest.mark.slow
def test_server_down_past_the_retry_window_fails_the_trial_naming_the_server(tmp_path):
    r = _small(tmp_path, restart_at=1.5, down_s=None, retry_s=3)
    assert len(r.failed) == 4 and r.gave_up >= 4
    for f in r.failed:
        assert "TrackingUnavailable" in f and "tracking server http://127.0.0.1:" in f and "3 s" in f, f
    # Given up a few seconds after the kill, not after MLflow's own minutes of HTTP retries.
    assert r.wall_s < r.restart["killed_at_s"] + 3 + 15, r.wall_s
    assert r.counts["distinct"] < r.expected_rows and r.counts["dup_rows"] == 0
    assert r.lost_rows == 0             # what the server had acknowledged before it died is all there
