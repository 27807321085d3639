"""`python -m bench.perf.tracking_load`: how many concurrent trials one `bench server` holds, and what a restart
of the server costs them.

N writers shaped like trials log at once through one `bench server` (started here on 127.0.0.1, stopped by its
PID), each with bench.track's own client code: the run made as the driver makes it (tags, params, SCHEDULED),
RUNNING and a few tags as the worker sets them, then per epoch one log_batch of the metrics a trial logs and a
checkpoint upload, the final metrics and tags, the end. Writers are threads spread over a few forked processes,
started one epoch apart at random and paced at one epoch every --epoch-s seconds (a fast trial; on a CPU an epoch
takes tens of seconds). Each backend (SQLite file, PostgreSQL) gets a fresh store; PostgreSQL is a temporary
server of our own (`temporary_postgres`), started as the `postgres` user when we are root.

Prints per run: writes per second (every request a writer made), p50/p99/max latency of the per-epoch log_batch
(what a trial waits for at each epoch end) and of the checkpoint upload, and metric rows: expected (every trial
finishing), acknowledged (the server answered OK), stored, lost (acknowledged but not stored) and duplicated (a
second row for one run, metric and step), counted afterwards in the backend database itself.

`--restart-at S` kill -9s the server (every process group of its process tree) S seconds in and starts it again on
the same port and store after `--down-s` more seconds; the writers ride it out on bench.track's retry
(BENCH_TRACK_RETRY_S, or --retry-s). A restart longer than that window ends the writers caught in it with
TrackingUnavailable, which names the server; they count as failed trials, their missing rows as lost.
"""

from __future__ import annotations

import argparse
import glob
import multiprocessing as mp
import os
import platform
import pwd
import queue
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench import track
from bench.procs import reap
from bench.trials import Trial

SUITE = "tracking_load"
EPOCH_METRICS = ("epoch", "train_loss", "train_error", "test_loss", "test_error", "lr", "images_per_sec", "progress")
FINAL_METRICS = ("wall_time_s", "train_time_s", "params", "mean_images_per_sec")
STEPS_PER_EPOCH = 200


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here, or no user to run them as; the message says which."""


# ---- a PostgreSQL of our own ---------------------------------------------------------------------------------------

def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise PostgresUnavailable("no PostgreSQL server here (no initdb in /usr/lib/postgresql/*/bin or on PATH); "
                              "`make postgres` installs Debian's postgresql where apt is usable")


def _pg_user() -> dict[str, Any]:
    """initdb and postgres refuse to run as root: as root, run them as the `postgres` system user that Debian's
    package creates; as anyone else, as ourselves."""
    if os.geteuid() != 0:
        return {}
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable("running as root and there is no `postgres` user to run PostgreSQL as "
                                  "(Debian's postgresql package creates it)") from None
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


@contextmanager
def temporary_postgres(databases: tuple[str, ...] = ("mlflow",)) -> Iterator[tuple[str, Any]]:
    """A PostgreSQL server on 127.0.0.1 and a free port, its cluster in a temporary directory, trust auth for the
    `postgres` role, with these databases created. Yields (postgresql://postgres@127.0.0.1:PORT/, createdb);
    stops it with `pg_ctl stop` on its data directory (the postmaster's PID file; a kill -9 of that PID if that
    fails) and removes the directory, also when the body raises."""
    bindir, as_pg = _pg_bin(), _pg_user()
    root = Path(tempfile.mkdtemp(prefix="bench-pg-", dir="/tmp"))
    data = root / "data"
    if as_pg:
        os.chown(root, as_pg["user"], as_pg["group"])

    def pg(*cmd: str, timeout: float = 120) -> None:
        r = subprocess.run([str(bindir / cmd[0]), *cmd[1:]], capture_output=True, text=True, timeout=timeout,
                           cwd=root, **as_pg)
        if r.returncode != 0:
            raise PostgresUnavailable(f"{cmd[0]} failed ({r.returncode}): "
                                      f"{(r.stderr or r.stdout).strip().splitlines()[-1:] or ''}")

    port = _free_port()
    started = False
    try:
        pg("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync")
        pg("pg_ctl", "-D", str(data), "-o", f"-k {root} -h 127.0.0.1 -p {port}", "-l", str(root / "server.log"),
           "-w", "-t", "120", "start")
        started = True
        base = f"postgresql://postgres@127.0.0.1:{port}/"

        def createdb(name: str) -> str:
            pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", name)
            return base + name

        for name in databases:
            createdb(name)
        yield base, createdb
    finally:
        if started:
            try:
                pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop", timeout=60)
            except (PostgresUnavailable, subprocess.TimeoutExpired):
                pidfile = data / "postmaster.pid"
                if pidfile.exists():
                    try:
                        os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
                    except (ValueError, ProcessLookupError):
                        pass
        shutil.rmtree(root, ignore_errors=True)


# ---- the server ---------------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`bench server` on 127.0.0.1:port, run from workdir (where a database store's artifacts go)."""

    def __init__(self, store: str, workdir: Path, port: int | None = None, workers: int | None = None,
                 extra: tuple[str, ...] = (), env: dict[str, str] | None = None):
        self.store, self.workdir, self.port, self.workers = store, workdir, port or _free_port(), workers
        self.extra, self.env = extra, env
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> float:
        """Start and wait for /health; returns the seconds that took."""
        t0 = time.monotonic()
        cmd = [sys.executable, "-m", "bench.cli", "server", "--port", str(self.port), "--store", self.store,
               *(["--workers", str(self.workers)] if self.workers else []), *self.extra]
        log = open(self.workdir / "server.log", "a")
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=self.env)
        log.close()
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"bench server exited with {self.proc.returncode}; see {self.workdir}/server.log")
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"bench server not up after {timeout:.0f} s; see {self.workdir}/server.log")
            time.sleep(0.2)

    def signal_tree(self, sig: int, wait_s: float = 10) -> None:
        """sig to `bench server` and everything under it: mlflow server runs in a session of its own, so every
        process group in the tree is signalled (each is ours, found from our child's PID), then each process."""
        if self.proc is None:
            return
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        groups = set()
        for p in procs:
            try:
                groups.add(os.getpgid(p.pid))
            except ProcessLookupError:
                pass
        for g in groups:
            try:
                os.killpg(g, sig)
            except ProcessLookupError:
                pass
        reap(procs, wait_s, sig)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def stop(self) -> None:
        self.signal_tree(signal.SIGTERM)


# ---- the writers ----------------------------------------------------------------------------------------------------

@dataclass
class Config:
    epochs: int = 10
    metrics: int = len(EPOCH_METRICS)
    epoch_s: float = 1.0
    checkpoint_kb: int = 560
    retry_s: float | None = None


def _metric_names(n: int) -> list[str]:
    return [*EPOCH_METRICS[:n], *(f"extra_{i}" for i in range(n - len(EPOCH_METRICS)))]


def trial(uri: str, exp: str, parent: str, i: int, cfg: Config, ckpt: Path, start_at: float) -> dict[str, Any]:
    """One trial's tracking life, timed. Never raises: an error ends the trial and is returned."""
    out: dict[str, Any] = {"i": i, "epoch_s": [], "upload_s": [], "writes": 0, "epochs": 0, "error": None,
                           "finished": False, "acked": 0}
    names = _metric_names(cfg.metrics)
    time.sleep(max(0.0, start_at - time.time()))
    try:
        t = Trial.adhoc("resnet20", {"epochs": cfg.epochs}, seed=i, cell=f"w{i}")
        run = track.create_trial_run(uri, exp, parent, t)                  # create, params, SCHEDULED
        out["writes"] += 3
        out["run_id"] = run
        tr = track.TrialTracker(uri, run)                                  # RUNNING
        tr.set_tags({"host": platform.node(), "pid": os.getpid(), "torch": "-", "lightning": "-"})
        out["writes"] += 2
        ckdir = ckpt.parent / f"w{i}"
        ckdir.mkdir(exist_ok=True)
        nxt = time.monotonic()
        for e in range(cfg.epochs):
            time.sleep(max(0.0, nxt - time.monotonic()))
            nxt += cfg.epoch_s
            step = (e + 1) * STEPS_PER_EPOCH
            vals = {k: round(random.random(), 6) for k in names} | {"epoch": e + 1}
            t0 = time.perf_counter()
            tr.log_metrics(vals, step)
            out["epoch_s"].append(time.perf_counter() - t0)
            out["acked"] += len(vals)                                      # the server said these are stored
            if cfg.checkpoint_kb:
                f = ckdir / f"epoch={e + 1:03d}.ckpt"
                os.link(ckpt, f)                                           # one file's bytes, a name per epoch
                t0 = time.perf_counter()
                tr.log_artifact(f, "checkpoints")
                out["upload_s"].append(time.perf_counter() - t0)
                out["writes"] += 1
            out["writes"] += 1
            out["epochs"] = e + 1
        tr.log_metrics({k: float(i) for k in FINAL_METRICS}, cfg.epochs * STEPS_PER_EPOCH)
        out["acked"] += len(FINAL_METRICS)
        tr.set_tags({"device": "cpu"})
        tr.finish()
        out["writes"] += 3
        out["finished"] = True
    except Exception as e:  # noqa: BLE001 - the trial's error is a result here
        out["error"] = f"{type(e).__name__}: {track._first_line(e)}"
    out["end"] = time.time()
    return out


def _process(q: Any, indices: list[int], uri: str, exp: str, parent: str, cfg: Config, ckpt: str,
             start_at: float, stagger: list[float]) -> None:
    """A writer process (or, with procs=0, this one): its trials on threads; reports their results and the retry
    counts they caused."""
    before, budget = dict(track.RETRY_STATS), track.RETRY_BUDGET_S
    track.RETRY_STATS.update(retries=0, gave_up=0)
    if cfg.retry_s is not None:
        track.RETRY_BUDGET_S = cfg.retry_s
    try:
        with ThreadPoolExecutor(len(indices)) as pool:
            res = list(pool.map(lambda ij: trial(uri, exp, parent, ij[0], cfg, Path(ckpt), start_at + ij[1]),
                                zip(indices, stagger)))
        q.put({"trials": res, "retry": dict(track.RETRY_STATS)})
    finally:
        track.RETRY_STATS.update(before)
        track.RETRY_BUDGET_S = budget


# ---- counting in the backend database -----------------------------------------------------------------------------

def count_rows(backend_uri: str, exp: str, parent: str) -> dict[str, int]:
    """Rows of the trial runs, read from the store's database directly (not through MLflow's API)."""
    import sqlalchemy

    from bench.server import database_uri

    url = backend_uri if backend_uri.startswith("sqlite:") else database_uri(backend_uri)
    eng = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    trials = ("SELECT r.run_uuid FROM runs r WHERE r.experiment_id = :e AND r.run_uuid <> :p")
    q = {
        "runs": f"SELECT count(*) FROM ({trials}) t",
        "finished": f"SELECT count(*) FROM runs WHERE run_uuid IN ({trials}) AND status = 'FINISHED'",
        "run_dups": f"SELECT count(*) - count(DISTINCT value) FROM tags WHERE key = 'bench.create_token' "
                    f"AND run_uuid IN ({trials})",
        "rows": f"SELECT count(*) FROM metrics WHERE run_uuid IN ({trials})",
        "distinct": f"SELECT count(*) FROM (SELECT run_uuid, key, step FROM metrics WHERE run_uuid IN ({trials}) "
                    "GROUP BY run_uuid, key, step) g",
    }
    per_run = (f"SELECT run_uuid, count(*) FROM (SELECT run_uuid, key, step FROM metrics WHERE run_uuid IN ({trials}) "
               "GROUP BY run_uuid, key, step) g GROUP BY run_uuid")
    args = {"e": int(exp), "p": parent}
    try:
        with eng.connect() as c:
            got: dict[str, Any] = {k: int(c.execute(sqlalchemy.text(v), args).scalar()) for k, v in q.items()}
            got["per_run"] = {r: int(n) for r, n in c.execute(sqlalchemy.text(per_run), args).all()}
    finally:
        eng.dispose()
    got["dup_rows"] = got.pop("rows") - got["distinct"]
    got["rows"] = got["distinct"] + got["dup_rows"]
    return got


# ---- one measured run ---------------------------------------------------------------------------------------------

@dataclass
class Result:
    backend: str
    writers: int
    cfg: Config
    wall_s: float = 0.0
    writes: int = 0
    epoch_s: list[float] = field(default_factory=list)
    upload_s: list[float] = field(default_factory=list)
    expected_rows: int = 0
    acked_rows: int = 0          # rows whose log_batch was answered OK: each must be stored
    acked_by_run: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    checkpoints: int = 0
    failed: list[str] = field(default_factory=list)
    retries: int = 0
    gave_up: int = 0
    restart: dict[str, float] = field(default_factory=dict)
    server_errors: dict[str, int] = field(default_factory=dict)

    @property
    def writes_per_s(self) -> float:
        return self.writes / self.wall_s if self.wall_s else 0.0

    def q(self, xs: list[float], p: float) -> float:
        if not xs:
            return float("nan")
        return statistics.quantiles(xs, n=100, method="inclusive")[int(p) - 1] if len(xs) > 1 else xs[0]

    @property
    def lost_rows(self) -> int:
        """Rows the server acknowledged that are not in the database (the count that must be 0), run by run: a
        batch that committed but whose answer was lost is stored without being acknowledged, and must not hide one."""
        stored = self.counts.get("per_run", {})
        return sum(max(0, n - stored.get(run, 0)) for run, n in self.acked_by_run.items())

    def ok(self) -> bool:
        c = self.counts
        return (not self.failed and self.lost_rows == 0 and self.acked_rows == self.expected_rows
                and c.get("dup_rows", 0) == 0 and c.get("run_dups", 0) == 0
                and c.get("runs") == self.writers and c.get("finished") == self.writers
                and self.checkpoints == (self.writers * self.cfg.epochs if self.cfg.checkpoint_kb else 0))


def run_load(backend: str, writers: int, cfg: Config, *, store: str, workdir: Path, procs: int = 8,
             server_workers: int | None = None, restart_at: float | None = None, down_s: float | None = 0.0,
             log=print) -> Result:
    """One server, one fresh store, `writers` concurrent trials. store: a directory (SQLite) or a database URI.
    procs=0 runs the writers as threads of this process (tests: no fork of a process that may hold threads);
    down_s=None leaves the server down after the kill."""
    res = Result(backend, writers, cfg)
    srv = Server(store, workdir, workers=server_workers)
    up = srv.start()
    log(f"  {backend} N={writers}: server up in {up:.1f} s")
    try:
        uri = srv.url
        exp = track.ensure_experiment(uri, SUITE)
        parent = track.start_parent(uri, exp, suite=SUITE, profile="load", dataset="-", argv=[], n_trials=writers,
                                    n_skipped=0)
        ckpt = workdir / "ckpt" / "state.ckpt"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        ckpt.write_bytes(os.urandom(cfg.checkpoint_kb * 1024))
        rng = random.Random(0)
        stagger = [rng.uniform(0, cfg.epoch_s) for _ in range(writers)]
        nproc = max(1, min(procs, writers))
        chunks = [list(range(writers))[k::nproc] for k in range(nproc)]
        ctx = mp.get_context("fork")
        q = ctx.Queue() if procs else queue.SimpleQueue()
        start_at = time.time() + 1.0
        args = [(q, c, uri, exp, parent, cfg, str(ckpt), start_at, [stagger[i] for i in c]) for c in chunks]
        if procs:
            ps = [ctx.Process(target=_process, args=a, daemon=True) for a in args]
        else:
            ps = [threading.Thread(target=_process, args=a, daemon=True) for a in args]
        for p in ps:
            p.start()
        restarter = None
        if restart_at is not None:
            def restart() -> None:
                time.sleep(max(0.0, start_at + restart_at - time.time()))
                t_kill = time.monotonic()
                res.restart["killed_at_s"] = time.time() - start_at
                srv.signal_tree(signal.SIGKILL)
                if down_s is None:
                    return
                time.sleep(down_s)
                res.restart["restart_s"] = srv.start()
                res.restart["down_s"] = time.monotonic() - t_kill
                log(f"  killed at {res.restart['killed_at_s']:.1f} s, serving again after "
                    f"{res.restart['down_s']:.1f} s")
            restarter = threading.Thread(target=restart, daemon=True)
            restarter.start()
        outs = [q.get(timeout=3600) for _ in ps]
        for p in ps:
            p.join(timeout=30)
        if restarter is not None:
            restarter.join(timeout=300)
        ends = []
        for o in outs:
            res.retries += o["retry"]["retries"]
            res.gave_up += o["retry"]["gave_up"]
            for t in o["trials"]:
                res.writes += t["writes"]
                res.epoch_s += t["epoch_s"]
                res.upload_s += t["upload_s"]
                res.acked_rows += t["acked"]
                if t.get("run_id"):
                    res.acked_by_run[t["run_id"]] = t["acked"]
                ends.append(t["end"])
                if t["error"]:
                    res.failed.append(f"w{t['i']}: {t['error']}")
        res.wall_s = max(ends) - start_at
        res.expected_rows = writers * (cfg.epochs * cfg.metrics + len(FINAL_METRICS))
        backend_uri = store if "://" in store else f"sqlite:///{Path(store).resolve() / 'mlflow.db'}"
        res.counts = count_rows(backend_uri, exp, parent)
        art = Path(store) / "mlartifacts" if "://" not in store else workdir / "mlartifacts"
        res.checkpoints = len(list(art.glob(f"{exp}/*/artifacts/checkpoints/*.ckpt")))
    finally:
        srv.stop()
        res.server_errors = server_errors(workdir / "server.log")
    return res


def server_errors(log: Path, top: int = 3) -> dict[str, int]:
    """The server's most frequent failed answers (status, method, path; from uvicorn's access log) and exception
    lines, with counts. 404s are left out: a get-by-name of an experiment not made yet is one."""
    import collections
    import re

    seen: collections.Counter[str] = collections.Counter()
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return {}
    for m in re.finditer(r'"(GET|POST|PUT|PATCH|DELETE) ([^ ?"]+)[^"]*" ([45]\d\d)', text):
        if m.group(3) != "404":
            seen[f"HTTP {m.group(3)} {m.group(1)} {m.group(2)}"] += 1
    for m in re.finditer(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.{0,120})", text, re.M):
        seen[re.sub(r"\d+", "N", f"{m.group(1)}: {m.group(2)}")] += 1
    return dict(seen.most_common(top))


# ---- reporting ----------------------------------------------------------------------------------------------------

HEAD = ("| backend | N | writes/s | epoch log p50 / p99 / max (s) | upload p50 / p99 (s) | rows expected / "
        "acknowledged / stored | lost | duplicated | runs (dup) | checkpoints | retries | failed trials |")


def row(r: Result) -> str:
    c = r.counts
    return (f"| {r.backend} | {r.writers} | {r.writes_per_s:.0f} | {r.q(r.epoch_s, 50):.3f} / "
            f"{r.q(r.epoch_s, 99):.3f} / {max(r.epoch_s, default=float('nan')):.2f} | {r.q(r.upload_s, 50):.3f} / "
            f"{r.q(r.upload_s, 99):.3f} | {r.expected_rows} / {r.acked_rows} / {c.get('rows', 0)} | {r.lost_rows} | "
            f"{c.get('dup_rows', 0)} | "
            f"{c.get('runs', 0)} ({c.get('run_dups', 0)}) | {r.checkpoints} | {r.retries} | {len(r.failed)} |")


def _machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB"


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    ap.add_argument("--writers", default="8,32,64", help="comma-separated counts of concurrent trials")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--metrics", type=int, default=len(EPOCH_METRICS), help="metrics per epoch (a trial logs 8)")
    ap.add_argument("--epoch-s", type=float, default=1.0, help="seconds between a writer's epochs")
    ap.add_argument("--checkpoint-kb", type=int, default=560,
                    help="checkpoint uploaded per epoch (560 KB: a width-8 ResNet-20 with its SGD momentum); 0: none")
    ap.add_argument("--procs", type=int, default=8, help="writer processes (the writers are threads among them)")
    ap.add_argument("--server-workers", type=int, help="bench server --workers (default: MLflow's, 4)")
    ap.add_argument("--restart-at", type=float, help="kill -9 the server this many seconds in, then restart it")
    ap.add_argument("--down-s", type=float, default=0.0, help="seconds between the kill and the restart")
    ap.add_argument("--retry-s", type=float, help="the writers' BENCH_TRACK_RETRY_S (default: the environment's)")
    ap.add_argument("--out", help="also write the table as markdown to this file")
    a = ap.parse_args(argv)
    if a.metrics < 1 or a.epochs < 1:
        ap.error("--metrics and --epochs must be at least 1")
    cfg = Config(epochs=a.epochs, metrics=a.metrics, epoch_s=a.epoch_s, checkpoint_kb=a.checkpoint_kb,
                 retry_s=a.retry_s)
    backends = [b.strip() for b in a.backends.split(",") if b.strip()]
    if set(backends) - {"sqlite", "postgresql"}:
        ap.error(f"--backends: sqlite and/or postgresql, not {a.backends!r}")
    counts = [int(n) for n in a.writers.split(",")]
    load_before, t_begin = _load(), time.strftime("%Y-%m-%d %H:%M:%S %Z")
    results: list[Result] = []
    work = Path(tempfile.mkdtemp(prefix="bench-load-", dir="/tmp"))
    print(HEAD, flush=True)
    try:
        with (temporary_postgres(()) if "postgresql" in backends else _none()) as pg:
            for b in backends:
                for n in counts:
                    d = work / f"{b}-{n}"
                    d.mkdir()
                    store = pg[1](f"load_{n}") if b == "postgresql" else str(d / "store")
                    r = run_load(b, n, cfg, store=store, workdir=d, procs=a.procs, server_workers=a.server_workers,
                                 restart_at=a.restart_at, down_s=a.down_s)
                    results.append(r)
                    print(row(r), flush=True)
    except PostgresUnavailable as e:
        print(f"bench.perf.tracking_load: PostgreSQL: {e}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = _load()
    lines = ["# Concurrent trials through one `bench server`" + (", killed and restarted" if a.restart_at else ""),
             "", f"`python -m bench.perf.tracking_load {' '.join(argv if argv is not None else sys.argv[1:])}`", "",
             f"{t_begin}; {_machine()}; {load_before} before, {load_after} after (the cores are shared with "
             f"whatever else runs: a load above their count slows the server too). {cfg.epochs} epochs per trial, "
             f"one every {cfg.epoch_s:g} s, {cfg.metrics} metrics per epoch, a {cfg.checkpoint_kb} KB checkpoint "
             f"upload per epoch; server workers: {a.server_workers or 'MLflow default (4)'}.", ""]
    lines += [HEAD, "|---" * (HEAD.count("|") - 1) + "|"]
    lines += [row(r) for r in results]
    for r in results:
        if r.restart.get("down_s") is not None:
            lines.append(f"\n{r.backend} N={r.writers}: killed (kill -9, every process group) at "
                         f"{r.restart['killed_at_s']:.1f} s, serving again {r.restart['down_s']:.1f} s later "
                         f"(restart itself {r.restart['restart_s']:.1f} s); retries {r.retries}, gave up "
                         f"{r.gave_up}; rows acknowledged but lost {r.lost_rows}, duplicated "
                         f"{r.counts.get('dup_rows', 0)}.")
        if r.failed or r.server_errors:
            lines.append(f"\n{r.backend} N={r.writers}: {len(r.failed)} trials failed"
                         + ("; the server's most frequent errors:" if r.server_errors else ":"))
            lines += [f"- {n}x {e}" for e, n in r.server_errors.items()]
        for f in r.failed[:3]:
            lines.append(f"- failed {f}")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)
    return 0 if all(r.ok() for r in results) else 1


@contextmanager
def _none() -> Iterator[None]:
    yield None


if __name__ == "__main__":
    sys.exit(main())
