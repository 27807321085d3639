"""`bench run SUITE --until-decided [--max-seeds N] [--budget DURATION]`: seeds wave by wave until every claim
is decided (or futile), N seeds per cell are reached, or the budget would be passed.

The first wave runs the profile's cells with its seeds (0..n0-1). After each wave every claim is judged afresh
from the finished runs in the store with the sequential rule (bench.report.sequential, through
bench.report.build.judge_store), and the next seed goes only to the cells of claims still open; a cell that
several open claims share serves them all. Nothing about the sequence lives in the driver's memory: Ctrl-C, a
killed driver or a cluster job (`bench submit --until-decided`) continue the same sequence on the next run, and
seeds are numbered 0, 1, 2, ... in order, so the same results give the same decisions. The design (first look,
maximum) is tagged on the parent run, where the report reads it; a store holding another design of the same
profile is refused, since its boundaries would judge the same runs differently.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from bench import track
from bench.report.sequential import Design
from bench.run.driver import Summary, _Heartbeat, close, launch, pending, prepare
from bench.spec import SpecError, Suite, get_profile, load_suite, parse_duration
from bench.trials import make_plan, waves

DEFAULT_MAX_SEEDS = 10
OVERHEAD = 1.3          # a wave's wall time over its trials' training time (start-up, evaluation), until measured


def check_args(suite: Suite, profile: str, seeds: int | None, max_seeds: int | None,
               cells: list[str] | None) -> Design:
    """The design, or a one-line refusal (exit 2) before anything runs."""
    p = get_profile(suite, profile)
    if cells:
        raise SpecError("--until-decided runs the profile's cells (the claims choose which get more seeds); "
                        "--cells cannot be combined with it")
    if not suite.claims:
        raise SpecError(f"suite {suite.name} states no claims: --until-decided has nothing to decide")
    if seeds is not None:
        if seeds < 1:
            raise SpecError(f"--seeds must be at least 1, got {seeds}")
        first = seeds
    else:
        listed = list(suite.seeds) if p.seeds is None else (list(range(p.seeds)) if isinstance(p.seeds, int)
                                                           else list(p.seeds))
        if listed != list(range(len(listed))):
            raise SpecError(f"suite {suite.name}: profile {profile} lists seeds {listed}; --until-decided numbers "
                            f"seeds 0, 1, 2, ... (pass --seeds N to start with 0..N-1)")
        first = len(listed)
    if max_seeds is None and p.until_decided is not None and p.until_decided.max_seeds is not None:
        max_seeds = p.until_decided.max_seeds
    if max_seeds is None:
        max_seeds = max(DEFAULT_MAX_SEEDS, first)
    if max_seeds < 1:
        raise SpecError(f"--max-seeds must be at least 1, got {max_seeds}")
    if max_seeds < first:
        raise SpecError(f"--max-seeds {max_seeds} is below the {first} seeds the sequence starts with "
                        f"({'--seeds' if seeds is not None else f'profile {profile}'})")
    if max_seeds < 2:
        raise SpecError("--max-seeds must be at least 2: a claim's test needs two seeds per cell")
    return Design(first, max_seeds)


def _store_has_no_other_design(suite: Suite, profile: str, design: Design):
    """check_store for prepare: refuse a store whose earlier sequence of this profile had another design."""
    from bench.report.build import designs_of

    def check(uri: str, dataset: str) -> None:
        if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
            return   # a new store: nothing to continue, and nothing is created here
        other = [d for d in designs_of(track.load_parents(uri, suite.name), profile, dataset) if d != design]
        if other:
            d = other[0]
            raise SpecError(f"{uri} holds a sequence of {suite.name} (profile {profile}, {dataset}) started with "
                            f"{d.first} seeds and at most {d.max}; continue it with the same --seeds/--max-seeds "
                            f"(its boundaries decide from those), or use another store")
    return check


def next_wave(claims: list[dict], design: Design) -> tuple[int, list[str]] | None:
    """(seeds per cell, cells) of the next wave from the claims as judged now, or None when none is open. The
    claims furthest behind go first: each open claim's next look is one seed more than its last."""
    want = {}
    for c in claims:
        q = c.get("sequential")
        if q is None or q["status"] not in ("open", "waiting"):
            continue
        want[c["id"]] = (q["n"] + 1 if q["status"] == "open" else design.looks[0], c["lhs"] + c["rhs"])
    if not want:
        return None
    seeds = min(n for n, _ in want.values())
    return seeds, list(dict.fromkeys(cell for n, cells in want.values() if n == seeds for cell in cells))


def _lpt(durations: list[float], slots: int) -> float:
    """Makespan of trials started longest first on `slots` equal slots (as the driver orders a wave)."""
    loads = [0.0] * max(1, slots)
    for d in sorted(durations, reverse=True):
        i = loads.index(min(loads))
        loads[i] += d
    return max(loads)


def estimate(trials, used, slots: int, overhead: float) -> float | None:
    """Seconds the wave's trials will take: each cell's mean training time so far (any cell's when it has none),
    scheduled longest first on the slots, times the measured overhead. None before anything was measured."""
    import pandas as pd

    if used is None or used.empty or "metrics.wall_time_s" not in used:
        return None
    wall = pd.to_numeric(used["metrics.wall_time_s"], errors="coerce")
    per_cell = wall.groupby(used["cell"]).mean().dropna()
    if per_cell.empty:
        return None
    fallback = float(per_cell.mean())
    return overhead * _lpt([float(per_cell.get(t.cell, fallback)) for t in trials], slots)


def _status_line(c: dict) -> str:
    q = c.get("sequential")
    if q is None:
        return f"  {c['id']}: {c['verdict']}"
    if q["status"] == "waiting":
        return f"  {c['id']}: waiting for {q['first']} seeds per cell"
    at = {"holds": "holds", "fails": "fails", "futile": "futile", "max": "open at the maximum",
          "open": "open"}[q["status"]]
    return (f"  {c['id']}: {at} at n={q['n']} (look {q['look']} of {q['looks']}): p={q['p']:.3g}, opposite "
            f"p={q['p_opp']:.3g}, boundary {q['threshold']:.3g}")


def run_until_decided(suite_ref: str, *, profile: str = "paper", dataset: str | None = None,
                      seeds: int | None = None, max_seeds: int | None = None, budget_s: float | None = None,
                      cells: list[str] | None = None, address: str | None = None, tracking_uri: str | None = None,
                      data_root: str | None = None, state_dir: Path | None = None, console: Console | None = None,
                      num_cpus: int | None = None, max_trials: int | None = None, max_failures: int = 2,
                      argv: list[str] | None = None, speed: str = "auto") -> Summary:
    from bench import models
    from bench.report.build import design_tags, judge_store
    from bench.run.driver import CONFIRM_ABOVE, check_resources
    from bench.run.progress import Progress

    t_start = time.time()
    console = console or Console()
    suite = load_suite(suite_ref)
    design = check_args(suite, profile, seeds, max_seeds, cells)
    declared = get_profile(suite, profile).until_decided
    if budget_s is None and declared is not None and declared.budget is not None:
        budget_s = parse_duration(declared.budget)
    options = lambda m: set(models.model_options(m))  # noqa: E731
    biggest = make_plan(suite, profile, dataset, design.max, model_options=options)
    limit = max_trials if max_trials is not None else CONFIRM_ABOVE
    if len(biggest.trials) > limit:
        raise SpecError(f"--max-seeds {design.max} allows {len(biggest.trials)} trials, more than {limit}; pass "
                        f"--max-trials {len(biggest.trials)} (or --yes)")
    st = prepare(suite_ref, profile=profile, dataset=dataset, seeds=design.first, cells=None, address=address,
                 tracking_uri=tracking_uri, data_root=data_root, state_dir=state_dir, num_cpus=num_cpus,
                 max_trials=max_trials, max_failures=max_failures, console=console,
                 check_store=_store_has_no_other_design(suite, profile, design), lazy_ray=False)
    st.speed = speed
    dataset = st.plan.dataset
    cpus = max(t.resources.total()[0] for t in biggest.trials)
    slots = max(1, int(st.cluster.get("CPU", 1) // cpus)) if st.embedded else len(biggest.trials)
    console.print(f"until decided: {design.describe()}; claims judged at each look (python -m "
                  f"bench.report.sequential)" + (f"; budget {budget_s:.0f} s" if budget_s else ""), highlight=False)
    overhead, beat, wave_no = OVERHEAD, None, 0
    plan_seeds, plan_cells = design.first, None      # the first wave: the whole profile at its seeds
    claims, used = judge_store(suite, st.uri, profile, dataset, design)
    try:
        while True:
            plan = make_plan(suite, profile, dataset, plan_seeds, plan_cells, model_options=options)
            st.plan = replace(plan, trials=check_resources(plan.trials, st.cluster, st.embedded, console,
                                                           st.node_types))
            st.done, st.held = track.finished_trials(st.uri, st.exp), set()
            todo = [t for t in st.plan.trials if t.config_hash not in st.done]
            if plan_cells is not None:
                console.print(f"next wave: seeds 0..{plan_seeds - 1} of {', '.join(plan_cells)}", highlight=False)
            est = estimate(todo, used, slots, overhead) if todo else 0.0
            if budget_s and est is not None and time.time() - t_start + est > budget_s:
                st.summary.stop = (f"budget: the next wave ({len(todo)} trial(s), about {est:.0f} s) would pass "
                                   f"{budget_s:.0f} s; {time.time() - t_start:.0f} s used")
                break
            pending(st)
            if st.todo:
                if st.parent is None:
                    st.parent = st.summary.parent_run = track.start_parent(
                        st.uri, st.exp, suite=suite.name, profile=profile, dataset=dataset,
                        argv=argv or sys.argv, n_trials=len(st.todo), n_skipped=st.summary.skipped,
                        tags=design_tags(design))
                    beat = _Heartbeat(st.uri, st.parent)
                t0, before = time.time(), len(used)
                with Progress(st.console, {}, total=len(st.todo)) as prog:
                    for wave in waves(st.todo):
                        launch(st, wave_no, wave, prog)
                        wave_no += 1
                if st.summary.failed:
                    st.summary.stop = "a trial failed: the sequence stops here (a re-run retries it)"
                    break
                claims, used = judge_store(suite, st.uri, profile, dataset, design)
                if len(used) == before:
                    st.summary.stop = "the wave finished no trial: the sequence stops here"
                    break
                pred = estimate(st.todo, used[used["run_id"].isin(st.run_of.values())], slots, 1.0)
                if pred:
                    overhead = max(1.0, (time.time() - t0) / pred)
            console.print("claims now:", highlight=False)
            for c in claims:
                console.print(_status_line(c), highlight=False)
            nxt = next_wave(claims, design)
            if nxt is None:
                st.summary.stop = "every claim is decided, futile or at the maximum"
                break
            plan_seeds, plan_cells = nxt
    finally:
        if beat is not None:
            beat.stop()
        if st.parent is not None:
            close(st)
    # Skipped: the sequence's results that were in the store before this run (pending counts one wave only).
    st.summary.skipped = max(0, len(used) - len(st.summary.finished) - len(st.summary.diverged))
    st.summary.decisions = {c["id"]: (c["sequential"]["status"] if c.get("sequential") else c["verdict"],
                                      c["sequential"]["n"] if c.get("sequential") else 0) for c in claims}
    st.summary.wall_s = time.time() - t_start
    return st.summary
