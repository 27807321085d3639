"""`bench run`: suite -> trials -> (skip finished) -> MLflow runs -> Ray Tune waves.

Everything that can fail on bad input (spec, models, dataset, cluster, store) is checked before the first
MLflow run is created, so a bad invocation leaves no half-written state.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from bench import track
from bench.run.trials import Trial, effective_search, expand, waves
from bench.spec import SpecError, Suite, load_suite

TERMINAL = {"FINISHED", "FAILED", "KILLED"}


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


def check_models(suite: Suite, trials: list[Trial]) -> None:
    """Build every distinct model on the meta device: unknown names and bad kwargs fail here, not in a worker."""
    import torch

    from bench import models

    seen = set()
    for t in trials:
        key = (t.model, repr(sorted(t.model_kwargs.items())))
        if key in seen:
            continue
        seen.add(key)
        try:
            with torch.device("meta"):
                models.create(t.model, **t.model_kwargs)
        except models.UnknownModelError as e:
            raise SpecError(f"{suite.name}: cell {t.cell}: {e}") from None
        except (TypeError, ValueError, models.ModelConfigError) as e:
            raise SpecError(f"{suite.name}: cell {t.cell}: model {t.model}: {e}") from None


def check_resources(trials: list[Trial], cluster: dict[str, float], embedded: bool, console: Console) -> list[Trial]:
    """Refuse what could never be scheduled (Ray would leave it pending forever); on the embedded local runtime a
    GPU request without a GPU falls back to the CPU with a note."""
    from bench.run.ray_exec import ClusterError

    gpus, cpus = cluster.get("GPU", 0), cluster.get("CPU", 0)
    out, dropped = [], 0
    for t in trials:
        r = dict(t.resources)
        n = int(r.get("workers", 1))
        if r.get("gpus", 0) > 0 and gpus == 0:
            if not embedded:
                raise ClusterError(f"trial {t.name} asks for {r['gpus']} GPU per worker but the cluster has none; "
                                   "it would wait forever (use a CPU profile or add GPU nodes)")
            r["gpus"], dropped = 0, dropped + 1
        if n == 1 and embedded and cpus:
            r["cpus"] = min(r.get("cpus", 1), cpus)
        need_cpu = n * r.get("cpus", 1) + (0.01 if n > 1 else 0)
        if need_cpu > cpus or n * r.get("gpus", 0) > gpus:
            raise ClusterError(f"trial {t.name} needs {need_cpu:g} CPU and {n * r.get('gpus', 0):g} GPU at once "
                               f"({n} worker(s)); the cluster has {cpus:g} CPU and {gpus:g} GPU")
        out.append(Trial(**{**t.to_dict(), "resources": r}))
    if dropped:
        console.print(f"note: no GPU in the local Ray runtime; {dropped} trial(s) that asked for a GPU run on CPU")
    return out


def tune_resources(r: dict) -> dict:
    """A data-parallel trial's Tune slot only coordinates: its Ray Train workers hold the CPUs and GPUs."""
    if r.get("workers", 1) > 1:
        return {"cpu": 0.01, "gpu": 0}
    return {"cpu": r.get("cpus", 1), "gpu": r.get("gpus", 0)}


def run_suite(suite_ref: str, *, profile: str = "paper", dataset: str | None = None, seeds: int | None = None,
              cells: list[str] | None = None, address: str | None = None, tracking_uri: str | None = None,
              data_root: str | None = None, state_dir: Path | None = None, console: Console | None = None,
              num_cpus: int | None = None, argv: list[str] | None = None) -> Summary:
    from bench import data as bdata
    from bench.run import ray_exec, worker
    from bench.run.progress import Progress

    console = console or Console()
    t_start = time.time()
    suite = load_suite(suite_ref)
    trials = expand(suite, profile, dataset, seeds, cells)
    check_models(suite, trials)
    ds_name = trials[0].dataset
    ds = bdata.load(ds_name, root=data_root)
    uri = track.normalize_uri(tracking_uri or track.default_tracking_uri())
    state = (state_dir or Path(".bench")).resolve()
    summary = Summary(suite.name, profile, ds_name, uri, total=len(trials), skipped=0)

    cluster = ray_exec.connect(address, num_cpus=num_cpus)
    trials = check_resources(trials, cluster, embedded=address is None, console=console)
    exp = track.ensure_experiment(uri, suite.name)
    done = track.finished_trials(uri, exp)
    search = effective_search(suite, profile)
    if search:
        # A (cell, seed) is done once its whole search is: every sample finished.
        counts = track.finished_search_counts(uri, exp)
        todo = [t for t in trials if counts.get(t.config_hash, 0) < search["num_samples"]]
    else:
        todo = [t for t in trials if t.config_hash not in done]
    summary.skipped = len(trials) - len(todo)
    console.print(f"suite {suite.name}: {len(trials)} trials (profile {profile}, dataset {ds_name}, "
                  f"seeds {sorted({t.seed for t in trials})}); tracking {uri}")
    if summary.skipped:
        console.print(f"skipping {summary.skipped} trial(s) already FINISHED with the same config hash")
    if not todo:
        console.print("nothing to run")
        summary.wall_s = time.time() - t_start
        return summary

    parent = track.start_parent(uri, exp, suite=suite.name, profile=profile, dataset=ds_name,
                                argv=argv or sys.argv, n_trials=len(todo), n_skipped=summary.skipped)
    summary.parent_run = parent
    if search:
        summary.total = len(trials) * search["num_samples"]
        console.print(f"random search through Ray Tune: {search['num_samples']} samples per (cell, seed), "
                      f"best by {search['metric']} ({search['mode']})")
        run_of: dict[str, str] = {}   # sample runs are created by the workers
    else:
        run_of = {}
    teachers = {t.teacher for t in trials if t.teacher}
    names: dict[str, str] = {}
    status: dict[str, str] = {}
    try:
        with Progress(console, names, total=len(todo) * (search["num_samples"] if search else 1)) as prog:
            for i, wave in enumerate(waves(todo)):
                configs = []
                for t in wave:
                    # Runs are created wave by wave, so a student's run starts after its teacher's ended.
                    rid = None if search else track.create_trial_run(uri, exp, parent, t)
                    if rid:
                        run_of[t.config_hash] = rid
                        names[rid] = t.name
                        prog.add(rid, t.name)
                    teacher_run = None
                    if t.teacher:
                        teacher_run = done.get(t.teacher) or run_of.get(t.teacher)
                        if teacher_run is None or (t.teacher in run_of and status.get(run_of[t.teacher]) != "FINISHED"):
                            msg = "teacher trial did not finish"
                            track.end_run(uri, rid, "FAILED", msg)
                            status[rid] = "FAILED"
                            summary.failed[t.name] = msg
                            prog.set_status(rid, "failed")
                            continue
                    configs.append({"trial": t.to_dict(), "uri": uri, "run_id": rid, "teacher_run": teacher_run,
                                    "save_checkpoint": t.config_hash in teachers, "exp": exp, "parent": parent})
                if not configs:
                    continue
                outcomes = ray_exec.run_wave(
                    worker.trainable, configs, data=ds, storage=state / "ray_results",
                    name=f"{suite.name}-{profile}-{parent[:8]}-w{i}", on_event=prog.event,
                    resources=lambda c: tune_resources(c["cfg"]["trial"]["resources"]),
                    search=search)
                for key, o in outcomes.items():
                    rid = key if key in names else (o.final or {}).get("run_id")
                    if rid is None:  # a search sample that was already finished, or died before its run existed
                        if o.status != "FINISHED":
                            summary.failed[key] = o.error or o.status
                        continue
                    names.setdefault(rid, key)
                    st = track.run_status(uri, rid)
                    if st not in TERMINAL:  # the worker died before it could say so
                        track.end_run(uri, rid, o.status, o.error)
                        st = o.status
                    status[rid] = st
                    name = names[rid]
                    if st == "FINISHED":
                        summary.finished.append(name)
                    else:
                        summary.failed[name] = o.error or st
    finally:
        for rid in run_of.values():
            if rid not in status and track.run_status(uri, rid) not in TERMINAL:
                track.end_run(uri, rid, "KILLED", "interrupted before the trial finished")
        complete = len(status) >= len(todo) if not search else True
        track.end_run(uri, parent, "FINISHED" if not summary.failed and complete else "FAILED")
    summary.wall_s = time.time() - t_start
    return summary
