"""`bench run`: plan -> (skip finished) -> MLflow runs -> Ray Tune waves, in named stages sharing one RunState:

    prepare -> pending -> launch (wave by wave, each reconciled) -> close

Everything that can fail on bad input (spec, models, dataset, cluster, store) is checked in `prepare`, before
the first MLflow run is created, so a bad invocation leaves no half-written state. The driver creates every
MLflow run (search samples included: they are drawn up front) and ends every run a dead trial left open.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from rich.console import Console

from bench import track
from bench.spec import SpecError, load_suite
from bench.timeline import mark
from bench.trials import Plan, Trial, make_plan, waves

TERMINAL = {"FINISHED", "FAILED", "KILLED"}
CONFIRM_ABOVE = 1000   # trials; more needs --max-trials or --yes
HEARTBEAT_S, LIVE_S = 15.0, 60.0   # a driver beats every 15 s; one silent for 60 s is dead


@dataclass
class Summary:
    suite: str
    profile: str
    dataset: str
    uri: str
    total: int
    skipped: int
    finished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    diverged: dict[str, str] = field(default_factory=dict)
    parent_run: str | None = None
    wall_s: float = 0.0
    stop: str = ""                                                   # --until-decided: why the sequence ended
    decisions: dict[str, tuple[str, int]] = field(default_factory=dict)   # claim -> (status, seeds per cell)


@dataclass
class RunState:
    plan: Plan
    uri: str
    exp: str
    data: Any
    storage: Path
    console: Console
    summary: Summary
    done: dict[str, tuple[str, str]]            # config hash -> (run id, commit) of FINISHED runs
    todo: list[Trial] = field(default_factory=list)
    parent: str | None = None
    max_failures: int = 2
    run_of: dict[str, str] = field(default_factory=dict)     # config hash -> run id this driver runs
    reuse: dict[str, str] = field(default_factory=dict)      # config hash -> unfinished run to continue
    held: set[str] = field(default_factory=set)              # config hashes another live driver is running
    status: dict[str, str] = field(default_factory=dict)     # run id -> terminal status
    names: dict[str, str] = field(default_factory=dict)      # run id -> trial name
    speed: str = "auto"                                       # --speed: runtime settings, not in the hash
    cluster: dict[str, float] = field(default_factory=dict)  # the Ray cluster's resources
    embedded: bool = True                                     # our own local Ray, not a cluster we joined
    node_types: list[dict] | None = None                      # an autoscaler's node types


def check_models(plan: Plan) -> None:
    """Build every distinct model on the meta device: unknown names and bad kwargs fail here, not in a worker."""
    from bench import models

    seen = set()
    for t in plan.trials:
        key = (t.model, repr(sorted(t.model_kwargs.items())))
        if key in seen:
            continue
        seen.add(key)
        try:
            models.create_meta(t.model, **t.model_kwargs)
        except models.UnknownModelError as e:
            raise SpecError(f"{plan.suite.name}: cell {t.cell}: {e}") from None
        except (TypeError, ValueError, models.ModelConfigError) as e:
            raise SpecError(f"{plan.suite.name}: cell {t.cell}: model {t.model}: {e}") from None


def check_resources(trials: list[Trial], cluster: dict[str, float], embedded: bool, console: Console,
                    node_types: list[dict] | None = None) -> list[Trial]:
    """Refuse what could never be scheduled (Ray would leave it pending forever); on the embedded local runtime a
    GPU request without a GPU falls back to the CPU with a note. With the autoscaler's node types, judge against
    what they could provide (bench.run.cluster), not what is up now."""
    from bench.run.cluster import capacity, infeasible
    from bench.run.cluster import bundles as _bundles
    from bench.run.ray_exec import ClusterError

    if node_types:
        cap = capacity(node_types)
        for t in trials:
            why = infeasible(_bundles(t.resources), node_types)
            if why:
                raise ClusterError(f"trial {t.name} can never be scheduled on this cluster: {why}")
        cluster = {**cluster, "CPU": max(cluster.get("CPU", 0), cap.get("CPU", 0)),
                   "GPU": max(cluster.get("GPU", 0), cap.get("GPU", 0))}
    gpus, cpus = cluster.get("GPU", 0), cluster.get("CPU", 0)
    out, dropped = [], 0
    for t in trials:
        r = t.resources
        if r.gpus > 0 and gpus == 0:
            if not embedded:
                raise ClusterError(f"trial {t.name} asks for {r.gpus} GPU per worker but the cluster has none; "
                                   "it would wait forever (use a CPU profile or add GPU nodes)")
            r, dropped = r.model_copy(update={"gpus": 0.0}), dropped + 1
        if not r.parallel and embedded and cpus:
            r = r.model_copy(update={"cpus": min(r.cpus, cpus)})
        need_cpu, need_gpu = r.total()
        if need_cpu > cpus or need_gpu > gpus:
            raise ClusterError(f"trial {t.name} needs {need_cpu:g} CPU and {need_gpu:g} GPU at once "
                               f"({r.workers} worker(s)); the cluster has {cpus:g} CPU and {gpus:g} GPU")
        out.append(replace(t, resources=r))
    if dropped:
        console.print(f"note: no GPU in the local Ray runtime; {dropped} trial(s) that asked for a GPU run on CPU")
    return out


def prepare(suite_ref: str, *, profile: str, dataset: str | None, seeds: int | None, cells: list[str] | None,
            address: str | None, tracking_uri: str | None, data_root: str | None, state_dir: Path | None,
            num_cpus: int | None, max_trials: int | None, max_failures: int, console: Console,
            check_store: Callable[[str, str], None] | None = None, lazy_ray: bool = True,
            first_seed: int = 0) -> RunState:
    """Everything that can fail on bad input, then Ray. `check_store(uri, dataset)` runs once the store is known
    to be reachable and before anything starts or is written. With `lazy_ray`, a plan whose trials have all
    finished starts no Ray (the loop of --until-decided, which plans more later, passes False)."""
    from bench import data as bdata
    from bench import models
    from bench.run import cluster as placement
    from bench.run import ray_exec

    suite = load_suite(suite_ref)
    plan = make_plan(suite, profile, dataset, seeds, cells, model_options=lambda m: set(models.model_options(m)),
                     first_seed=first_seed)
    limit = max_trials if max_trials is not None else CONFIRM_ABOVE
    if len(plan.trials) > limit:
        raise SpecError(f"{plan.summary()}: more than {limit} trials; pass --max-trials {len(plan.trials)} "
                        f"(or --yes) to run them all")
    check_models(plan)
    mark("driver.planned")
    uri = track.normalize_uri(tracking_uri or track.default_tracking_uri())
    if max_failures < 0:
        raise SpecError(f"--max-failures must be 0 or more (got {max_failures})")
    placement.check_tracking_uri(uri)
    if check_store is not None:
        check_store(uri, plan.dataset)
    ds = bdata.load(plan.dataset, root=data_root)
    mark("driver.data_loaded")
    st_dir = (state_dir or Path(".bench")).resolve()
    summary = Summary(suite.name, profile, plan.dataset, uri, total=len(plan.trials), skipped=0)
    done = track.finished_trials_if_any(uri, suite.name)
    rest = [t for t in plan.trials if t.config_hash not in done]
    if lazy_ray and (not rest or _held_elsewhere(uri, suite.name, rest)):
        # Nothing to run (all finished, or the rest held by another live driver): no Ray runtime to start or join,
        # seconds saved on every re-run of a finished suite and on a second `bench run` beside a running one.
        return RunState(plan, uri, track.ensure_experiment(uri, suite.name), ds, st_dir, console, summary, done=done,
                        max_failures=max_failures)
    cluster = ray_exec.connect(address, num_cpus=num_cpus)
    mark("driver.ray_up")
    if address:
        nodes = ray_exec.alive_nodes()
        placement.check_shared_store(uri, nodes)
        if state_dir is None and nodes > 1:
            raise ray_exec.ClusterError("a multi-node cluster needs --storage: a path every node shares (NFS), "
                                        "where trial checkpoints live; the default ./.bench is local to this machine")
    node_types = ray_exec.node_types() if address else None
    trials = check_resources(plan.trials, cluster, embedded=address is None, console=console, node_types=node_types)
    plan = replace(plan, trials=trials)
    exp = track.ensure_experiment(uri, suite.name)
    mark("driver.store_ready")
    return RunState(plan, uri, exp, ds, st_dir, console, summary, done=track.finished_trials(uri, exp),
                    max_failures=max_failures, cluster=cluster, embedded=address is None, node_types=node_types)


def _held(uri: str, o: dict | None, alive: dict) -> bool:
    """Whether an open trial run (from track.unfinished_trials) belongs to a live driver; `alive` caches the
    answer per parent run."""
    if o is None or o["diverged"] or o["status"] in TERMINAL:
        return False
    if o["parent"] not in alive:
        alive[o["parent"]] = track.driver_alive(uri, o["parent"], LIVE_S)
    return alive[o["parent"]]


def _held_elsewhere(uri: str, suite: str, trials: list[Trial]) -> bool:
    """Whether every one of these trials has an open run under another live driver (read-only: ending a dead
    driver's runs is `_claim`'s job, once Ray is up)."""
    exp = track.existing_experiment(uri, suite)
    if exp is None:
        return False
    open_runs, alive = track.unfinished_trials(uri, exp), {}
    return all(_held(uri, open_runs.get(t.config_hash), alive) for t in trials)


def _claim(st: RunState, trials: list[Trial]) -> list[Trial]:
    """The trials that are free: not held by another live driver (nor waiting on a teacher that is). Runs left
    open by a dead driver are ended as KILLED and continued; a diverged run is a result and is kept."""
    open_runs = track.unfinished_trials(st.uri, st.exp)
    alive: dict[str | None, bool] = {}
    free = []
    for t in trials:
        h, o = t.config_hash, open_runs.get(t.config_hash)
        if o is not None and o["run_id"] in st.run_of.values():
            free.append(t)   # our own run (created in an earlier wave)
            continue
        if o is not None and o["diverged"]:
            st.done[h] = (o["run_id"], "diverged")
            continue
        if _held(st.uri, o, alive):
            st.held.add(h)
            continue
        if o is not None and o["status"] not in TERMINAL:
            track.end_run(st.uri, o["run_id"], "KILLED", "driver lost; a later bench run continues it")
        if t.teacher in st.held:
            st.held.add(h)
            continue
        if o is not None:
            st.reuse[h] = o["run_id"]
        free.append(t)
    return free


def pending(st: RunState) -> None:
    """What is left to run; says which finished runs it reuses (and from which commits), what another driver
    holds, and what resumes from a checkpoint."""
    st.todo = _claim(st, [t for t in st.plan.trials if t.config_hash not in st.done])
    lost = track.end_dead_parents(st.uri, st.exp, LIVE_S)   # their trial runs: _claim, just now
    st.summary.skipped = len(st.plan.trials) - len(st.todo)
    st.console.print(f"{st.plan.summary()}; tracking {st.uri}", highlight=False)
    commits: dict[str, int] = {}
    for t in st.plan.trials:
        if t.config_hash in st.done:
            c = st.done[t.config_hash][1]
            commits[c] = commits.get(c, 0) + 1
    if commits:
        where = ", ".join(f"{n} from commit {c}" if c != "diverged" else f"{n} diverged (a result)"
                          for c, n in sorted(commits.items()))
        st.console.print(f"skipping {sum(commits.values())} trial(s) already FINISHED with the same config hash "
                         f"({where})", highlight=False)
    if lost:
        st.console.print(f"ended KILLED {len(lost)} parent run(s) left RUNNING by a bench run that died")
    if st.held:
        st.console.print(f"leaving {len(st.held)} trial(s) to another bench run that is running them now")
    resumed = [f"{t.name} from epoch {m['epoch']}" for t in st.todo
               if (m := _checkpoint_meta(st, t)) is not None]
    if resumed:
        st.console.print(f"resuming {len(resumed)} trial(s) from their checkpoints: {', '.join(resumed)}",
                         highlight=False)


def _ckpt_dir(st: RunState, t: Trial) -> Path:
    return st.storage / "checkpoints" / t.config_hash


def _checkpoint_meta(st: RunState, t: Trial) -> dict | None:
    from bench.run.worker import META_FILE

    f = _ckpt_dir(st, t) / META_FILE
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        return None


def _configs(st: RunState, wave: list[Trial], prog) -> list[dict[str, Any]]:
    """Create the wave's runs (a student's run starts after its teacher's ended) and their Tune configs."""
    teachers = {t.teacher for t in st.plan.trials if t.teacher}
    configs = []
    for t in _claim(st, wave) if st.run_of else wave:   # wave 0 was claimed by `pending` just now
        if t.config_hash in st.reuse:
            rid = st.reuse[t.config_hash]
            track.reopen_run(st.uri, rid, st.parent)
        else:
            rid = track.create_trial_run(st.uri, st.exp, st.parent, t)
        st.run_of[t.config_hash], st.names[rid] = rid, t.name
        prog.add(rid, t.name)
        teacher_run = None
        if t.teacher:
            own = st.run_of.get(t.teacher)
            teacher_run = own if own is not None else st.done.get(t.teacher, (None,))[0]
            if teacher_run is None or (own is not None and st.status.get(own) != "FINISHED"):
                _record(st, rid, "FAILED", "teacher trial did not finish", prog)
                continue
        configs.append({"trial": t.to_dict(), "name": t.name, "uri": st.uri, "run_id": rid,
                        "teacher_run": teacher_run, "save_checkpoint": t.config_hash in teachers,
                        "ckpt_dir": str(_ckpt_dir(st, t)), "speed": st.speed})
    return configs


def _record(st: RunState, rid: str, status: str, error: str | None, prog=None) -> None:
    if track.run_status(st.uri, rid) not in TERMINAL:   # the worker died before it could say so
        track.end_run(st.uri, rid, status, error)
    st.status[rid] = status
    if status == "FINISHED":
        st.summary.finished.append(st.names[rid])
    elif error and error.startswith("diverged at step"):
        st.summary.diverged[st.names[rid]] = error   # a result: deep plain nets can diverge
    else:
        st.summary.failed[st.names[rid]] = error or status
        if prog is not None:
            prog.set_status(rid, "failed")


def longest_first(trials: list[Trial], data) -> list[Trial]:
    """Tune starts a wave's trials in the order given. Longest first (LPT) keeps a wave from ending on one long
    trial while the other slots idle (the quickstart: 594 s in plan order, one slot idle for the last 93 s).
    Cost = multiply-adds per image (counted on the meta device at the data's shape) x images trained."""
    from bench import models
    from bench.models.flops import count_flops

    n_train = len(data.train_y) if data.kind == "memory" else len(data.train_files)
    macs: dict[tuple, int] = {}

    def cost(t: Trial) -> float:
        key = (t.model, repr(sorted(t.model_kwargs.items())))
        if key not in macs:
            m = models.create_meta(t.model, num_classes=data.num_classes, in_channels=data.in_channels,
                                   image_size=data.image_size, **t.model_kwargs)
            macs[key] = count_flops(m, data.image_size, data.in_channels)
        p = t.protocol
        images = p.iterations * p.batch_size if p.iterations else p.epochs * min(p.train_subset or n_train, n_train)
        return macs[key] * images

    return sorted(trials, key=cost, reverse=True)   # stable: equal costs keep the plan's order


def launch(st: RunState, i: int, wave: list[Trial], prog) -> None:
    from bench.run import ray_exec, worker

    configs = _configs(st, longest_first(wave, st.data), prog)
    if not configs:
        return
    outcomes = ray_exec.run_wave(worker.trainable, configs, data=st.data, storage=st.storage / "ray_results",
                                 name=f"{st.plan.suite.name}-{st.plan.profile}-{st.parent[:8]}-w{i}",
                                 on_event=prog.event, resources=lambda c: _slot(c["cfg"]),
                                 max_failures=st.max_failures)
    for rid, o in outcomes.items():   # reconcile: what Tune says against what the store holds
        status, error = track.run_state(st.uri, rid)
        _record(st, rid, *((status, error or o.error) if status in TERMINAL else (o.status, o.error)))


def _slot(cfg: dict[str, Any]) -> dict[str, float]:
    return Trial.from_dict(cfg["trial"]).resources.slot()


def close(st: RunState) -> None:
    """End whatever is still open: runs a dead or interrupted trial left, and the parent. Where there are such
    runs, Ray's workers are stopped first: a worker starting just then would mark its run RUNNING again after it
    was ended (seen on Ctrl-C and `bench stop` as a trial's worker started)."""
    left = [rid for rid in st.run_of.values() if rid not in st.status]
    if left and st.cluster is not None:
        from bench.run import ray_exec

        ray_exec.shutdown(wait_workers=True)
    for rid in left:
        if track.run_status(st.uri, rid) not in TERMINAL:
            track.end_run(st.uri, rid, "KILLED", "interrupted; the next bench run resumes it from its checkpoint")
    if st.parent:
        ok = not st.summary.failed and len(st.status) >= len(st.todo)
        track.end_run(st.uri, st.parent, "FINISHED" if ok else "FAILED")


def run_suite(suite_ref: str, *, profile: str = "paper", dataset: str | None = None, seeds: int | None = None,
              cells: list[str] | None = None, address: str | None = None, tracking_uri: str | None = None,
              data_root: str | None = None, state_dir: Path | None = None, console: Console | None = None,
              num_cpus: int | None = None, max_trials: int | None = None, max_failures: int = 2,
              argv: list[str] | None = None, speed: str = "auto", first_seed: int = 0) -> Summary:
    from bench.run.progress import Progress

    t_start = time.time()
    st = prepare(suite_ref, profile=profile, dataset=dataset, seeds=seeds, cells=cells, address=address,
                 tracking_uri=tracking_uri, data_root=data_root, state_dir=state_dir, num_cpus=num_cpus,
                 max_trials=max_trials, max_failures=max_failures, console=console or Console(),
                 first_seed=first_seed)
    st.speed = speed
    pending(st)
    if st.todo:
        st.parent = st.summary.parent_run = track.start_parent(
            st.uri, st.exp, suite=st.plan.suite.name, profile=profile, dataset=st.plan.dataset,
            argv=argv or sys.argv, n_trials=len(st.todo), n_skipped=st.summary.skipped)
        beat = _Heartbeat(st.uri, st.parent)
        try:
            with Progress(st.console, {}, total=len(st.todo)) as prog:
                for i, wave in enumerate(waves(st.todo)):
                    launch(st, i, wave, prog)
        finally:
            beat.stop()
            close(st)
    else:
        st.console.print("nothing to run")
    st.summary.wall_s = time.time() - t_start
    return st.summary


class _Heartbeat:
    """Beats on the parent run from a daemon thread while the driver lives (a kill -9 stops it, which is the
    point: a later driver then knows the runs are orphaned)."""

    def __init__(self, uri: str, parent: str):
        self.uri, self.parent = uri, parent
        self.stopped = threading.Event()
        track.heartbeat(uri, parent)
        self.thread = threading.Thread(target=self._run, name="bench-heartbeat", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(HEARTBEAT_S):
            try:
                track.heartbeat(self.uri, self.parent)
            except Exception:  # noqa: BLE001 - a missed beat is retried at the next one
                pass

    def stop(self) -> None:
        self.stopped.set()
