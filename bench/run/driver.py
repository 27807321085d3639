"""`bench run`: plan -> (skip finished) -> MLflow runs -> Ray Tune waves, in named stages sharing one RunState:

    prepare -> pending -> launch (wave by wave, each reconciled) -> close

Everything that can fail on bad input (spec, models, dataset, cluster, store) is checked in `prepare`, before
the first MLflow run is created, so a bad invocation leaves no half-written state. The driver creates every
MLflow run (search samples included: they are drawn up front) and ends every run a dead trial left open.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import track
from bench.spec import SpecError, load_suite
from bench.trials import Plan, Trial, make_plan, waves

TERMINAL = {"FINISHED", "FAILED", "KILLED"}
CONFIRM_ABOVE = 1000   # trials; more needs --max-trials or --yes


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
    parent_run: str | None = None
    wall_s: float = 0.0


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
    run_of: dict[str, str] = field(default_factory=dict)     # config hash -> run id created by this driver
    status: dict[str, str] = field(default_factory=dict)     # run id -> terminal status
    names: dict[str, str] = field(default_factory=dict)      # run id -> trial name
    speed: str = "auto"                                       # --speed: runtime settings, not in the hash


def check_models(plan: Plan) -> None:
    """Build every distinct model on the meta device: unknown names and bad kwargs fail here, not in a worker."""
    import torch

    from bench import models

    seen = set()
    for t in plan.trials:
        key = (t.model, repr(sorted(t.model_kwargs.items())))
        if key in seen:
            continue
        seen.add(key)
        try:
            with torch.device("meta"):
                models.create(t.model, **t.model_kwargs)
        except models.UnknownModelError as e:
            raise SpecError(f"{plan.suite.name}: cell {t.cell}: {e}") from None
        except (TypeError, ValueError, models.ModelConfigError) as e:
            raise SpecError(f"{plan.suite.name}: cell {t.cell}: model {t.model}: {e}") from None


def check_resources(trials: list[Trial], cluster: dict[str, float], embedded: bool, console: Console) -> list[Trial]:
    """Refuse what could never be scheduled (Ray would leave it pending forever); on the embedded local runtime a
    GPU request without a GPU falls back to the CPU with a note."""
    from bench.run.ray_exec import ClusterError

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
            num_cpus: int | None, max_trials: int | None, console: Console) -> RunState:
    from bench import data as bdata
    from bench import models
    from bench.run import ray_exec

    suite = load_suite(suite_ref)
    plan = make_plan(suite, profile, dataset, seeds, cells, model_options=lambda m: set(models.model_options(m)))
    limit = max_trials if max_trials is not None else CONFIRM_ABOVE
    if len(plan.trials) > limit:
        raise SpecError(f"{plan.summary()}: more than {limit} trials; pass --max-trials {len(plan.trials)} "
                        f"(or --yes) to run them all")
    check_models(plan)
    ds = bdata.load(plan.dataset, root=data_root)
    uri = track.normalize_uri(tracking_uri or track.default_tracking_uri())
    cluster = ray_exec.connect(address, num_cpus=num_cpus)
    trials = check_resources(plan.trials, cluster, embedded=address is None, console=console)
    plan = replace(plan, trials=trials)
    exp = track.ensure_experiment(uri, suite.name)
    summary = Summary(suite.name, profile, plan.dataset, uri, total=len(trials), skipped=0)
    return RunState(plan, uri, exp, ds, (state_dir or Path(".bench")).resolve(), console, summary,
                    done=track.finished_trials(uri, exp))


def pending(st: RunState) -> None:
    """What is left to run; says which finished runs it reuses, and from which commits."""
    st.todo = [t for t in st.plan.trials if t.config_hash not in st.done]
    st.summary.skipped = len(st.plan.trials) - len(st.todo)
    st.console.print(f"{st.plan.summary()}; tracking {st.uri}", highlight=False)
    if st.summary.skipped:
        commits: dict[str, int] = {}
        for t in st.plan.trials:
            if t.config_hash in st.done:
                c = st.done[t.config_hash][1]
                commits[c] = commits.get(c, 0) + 1
        where = ", ".join(f"{n} from commit {c}" for c, n in sorted(commits.items()))
        st.console.print(f"skipping {st.summary.skipped} trial(s) already FINISHED with the same config hash "
                         f"({where})", highlight=False)


def _configs(st: RunState, wave: list[Trial], prog) -> list[dict[str, Any]]:
    """Create the wave's runs (a student's run starts after its teacher's ended) and their Tune configs."""
    teachers = {t.teacher for t in st.plan.trials if t.teacher}
    configs = []
    for t in wave:
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
                        "speed": st.speed})
    return configs


def _record(st: RunState, rid: str, status: str, error: str | None, prog=None) -> None:
    if track.run_status(st.uri, rid) not in TERMINAL:   # the worker died before it could say so
        track.end_run(st.uri, rid, status, error)
    st.status[rid] = status
    if status == "FINISHED":
        st.summary.finished.append(st.names[rid])
    else:
        st.summary.failed[st.names[rid]] = error or status
        if prog is not None:
            prog.set_status(rid, "failed")


def launch(st: RunState, i: int, wave: list[Trial], prog) -> None:
    from bench.run import ray_exec, worker

    configs = _configs(st, wave, prog)
    if not configs:
        return
    outcomes = ray_exec.run_wave(worker.trainable, configs, data=st.data, storage=st.storage / "ray_results",
                                 name=f"{st.plan.suite.name}-{st.plan.profile}-{st.parent[:8]}-w{i}",
                                 on_event=prog.event, resources=lambda c: _slot(c["cfg"]))
    for rid, o in outcomes.items():   # reconcile: what Tune says against what the store holds
        st_now = track.run_status(st.uri, rid)
        _record(st, rid, st_now if st_now in TERMINAL else o.status, o.error)


def _slot(cfg: dict[str, Any]) -> dict[str, float]:
    return Trial.from_dict(cfg["trial"]).resources.slot()


def close(st: RunState) -> None:
    """End whatever is still open: runs a dead trial left, and the parent."""
    for rid in st.run_of.values():
        if rid not in st.status and track.run_status(st.uri, rid) not in TERMINAL:
            track.end_run(st.uri, rid, "KILLED", "interrupted before the trial finished")
    if st.parent:
        ok = not st.summary.failed and len(st.status) >= len(st.todo)
        track.end_run(st.uri, st.parent, "FINISHED" if ok else "FAILED")


def run_suite(suite_ref: str, *, profile: str = "paper", dataset: str | None = None, seeds: int | None = None,
              cells: list[str] | None = None, address: str | None = None, tracking_uri: str | None = None,
              data_root: str | None = None, state_dir: Path | None = None, console: Console | None = None,
              num_cpus: int | None = None, max_trials: int | None = None, argv: list[str] | None = None,
              speed: str = "auto") -> Summary:
    from bench.run.progress import Progress

    t_start = time.time()
    st = prepare(suite_ref, profile=profile, dataset=dataset, seeds=seeds, cells=cells, address=address,
                 tracking_uri=tracking_uri, data_root=data_root, state_dir=state_dir, num_cpus=num_cpus,
                 max_trials=max_trials, console=console or Console())
    st.speed = speed
    pending(st)
    if st.todo:
        st.parent = st.summary.parent_run = track.start_parent(
            st.uri, st.exp, suite=st.plan.suite.name, profile=profile, dataset=st.plan.dataset,
            argv=argv or sys.argv, n_trials=len(st.todo), n_skipped=st.summary.skipped)
        try:
            with Progress(st.console, {}, total=len(st.todo)) as prog:
                for i, wave in enumerate(waves(st.todo)):
                    launch(st, i, wave, prog)
        finally:
            close(st)
    else:
        st.console.print("nothing to run")
    st.summary.wall_s = time.time() - t_start
    return st.summary
