"""The `bench` command. Every user error is one line on stderr and a non-zero exit (2 for bad input)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bench import BenchError
from bench.timeline import mark


def _suite_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", help="suite name (suites/NAME.yaml) or path to a suite YAML")


def _sequential_args(a: argparse.Namespace) -> float | None:
    """--max-seeds and --budget belong to --until-decided; the budget in seconds."""
    from bench.spec import SpecError

    if not a.until_decided:
        for flag, v in (("--max-seeds", a.max_seeds), ("--budget", a.budget)):
            if v is not None:
                raise SpecError(f"{flag} needs --until-decided")
        return None
    if getattr(a, "first_seed", 0):
        raise SpecError("--until-decided numbers its seeds 0, 1, 2, ...; --first-seed is for fixed pilot runs")
    from bench.spec import parse_duration

    return parse_duration(a.budget) if a.budget is not None else None


def cmd_run(a: argparse.Namespace) -> int:
    from rich.console import Console

    budget = _sequential_args(a)
    from bench.run.driver import run_suite
    from bench.run.until_decided import run_until_decided

    _sigterm_interrupts()
    console = Console()
    kw = dict(profile=a.profile, dataset=a.dataset, seeds=a.seeds, cells=a.cells, address=a.address,
              tracking_uri=a.tracking_uri, data_root=a.data_root, num_cpus=a.num_cpus, argv=sys.argv,
              console=console, state_dir=Path(a.storage) if a.storage else None, max_failures=a.max_failures,
              max_trials=(1 << 62) if a.yes else a.max_trials, speed=a.speed)
    if a.until_decided:
        s = run_until_decided(a.suite, max_seeds=a.max_seeds, budget_s=budget, **kw)
    else:
        s = run_suite(a.suite, first_seed=a.first_seed, **kw)
    console.print(f"suite {s.suite}: {len(s.finished)} finished, {len(s.failed)} failed, {s.skipped} skipped "
                  f"in {s.wall_s:.1f} s" + (f", {len(s.diverged)} diverged" if s.diverged else ""))
    if a.until_decided:
        console.print(f"sequence ended: {s.stop}", highlight=False)
        for cid, (status, n) in s.decisions.items():
            console.print(f"  claim {cid}: {status}" + (f" at {n} seeds per cell" if n else ""), highlight=False)
    for name, msg in s.diverged.items():
        console.print(f"  DIVERGED {name}: {msg} (kept as a result)", highlight=False)
    for name, err in s.failed.items():
        console.print(f"  FAILED {name}: {err}", highlight=False)
    console.print(f"next: bench report {a.suite}" + (f" --tracking-uri {a.tracking_uri}" if a.tracking_uri else ""))
    return 1 if s.failed else 0


def _sigterm_interrupts() -> None:
    """`bench stop` (and any SIGTERM) ends a run like Ctrl-C: the driver ends its open runs KILLED and exits."""
    import signal

    def interrupt(_sig, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def cmd_submit(a: argparse.Namespace) -> int:
    from bench.run import jobs

    _sequential_args(a)
    return jobs.submit(a.suite, profile=a.profile, dataset=a.dataset, seeds=a.seeds, cells=a.cells,
                       tracking_uri=a.tracking_uri, storage=a.storage, address=a.address, wait=a.wait,
                       until_decided=a.until_decided, max_seeds=a.max_seeds, budget=a.budget)


def cmd_jobs(a: argparse.Namespace) -> int:
    from bench.run import jobs

    rows = jobs.list_jobs(a.address)
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = ("id", "suite", "profile", "status", "start", "duration")
    width = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in cols}
    for r in [dict(zip(cols, cols))] + rows:
        print("  ".join(f"{r[c]:<{width[c]}}" for c in cols).rstrip())
    return 0


def cmd_status(a: argparse.Namespace) -> int:
    from bench.run import jobs

    r = jobs.status(a.job, a.address)
    print(f"{r['id']}: {r['status']} (suite {r['suite']}, profile {r['profile']}, started {r['start']}, "
          f"{r['duration']})" + (f": {r['message']}" if r["message"] else ""))
    return 0


def cmd_logs(a: argparse.Namespace) -> int:
    from bench.run import jobs

    return jobs.logs(a.job, a.address, a.follow)


def cmd_stop(a: argparse.Namespace) -> int:
    from bench.run import jobs

    print(f"{a.job}: {jobs.stop(a.job, a.address)}")
    return 0


def cmd_server(a: argparse.Namespace) -> int:
    from bench import server

    return server.serve(a.host, a.port, a.store, a.workers, a.auth)


def cmd_report(a: argparse.Namespace) -> int:
    from bench import track
    from bench.report import build_report
    from bench.spec import load_suite

    suite = load_suite(a.suite)
    uri = track.normalize_uri(a.tracking_uri or track.default_tracking_uri())
    track.require_store(uri)
    res = build_report(suite, uri, out_dir=Path(a.out) if a.out else None, profile=a.profile, dataset=a.dataset)
    print(res.markdown if a.print else f"report written to {res.out_dir}/")
    for c in res.claims:
        print(f"  claim {c['id']}: {c['verdict']}")
    if not a.print:
        ui = (f"open {uri} (the tracking server serves the MLflow UI)" if uri.startswith(("http://", "https://"))
              else f"mlflow ui --backend-store-uri {uri}")
        print(f"open {res.out_dir / 'report.html'}; browse runs with: {ui}")
    return 0


def cmd_list(a: argparse.Namespace) -> int:
    from bench.spec import list_suites, load_suite

    out = []
    for path in list_suites():
        s = load_suite(path)
        out.append({"name": s.name, "title": s.title, "paper": s.paper.ref, "dataset": s.dataset,
                    "profiles": s.profile_names(), "seeds": len(s.seeds), "claims": [c.id for c in s.claims],
                    "cells": [{"id": c.id, "model": c.model, "row": c.row, "col": c.col} for c in s.cells]})
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    for s in out:
        print(f"{s['name']}: {s['title']} [{s['paper']}; {s['dataset']}; profiles: {', '.join(s['profiles'])}]")
        print("    cells: " + ", ".join(c["id"] for c in s["cells"]))
    return 0


def cmd_models(a: argparse.Namespace) -> int:
    from bench import models

    rows = models.describe_all()
    if a.family:
        rows = [r for r in rows if r["family"] == a.family]
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<22} {'family':<17} {'input':>5} {'params':>11} {'paper':>8} {'MFLOPs':>10} {'paper':>8}")
    for r in rows:
        pp = f"{r['paper_params'] / 1e6:.2f}M" if r.get("paper_params") else ""
        pf = f"{r['paper_flops'] / 1e9:.1f}G" if r.get("paper_flops") else ""
        print(f"{r['name']:<22} {r['family']:<17} {r['input_size']:>5} {r['params']:>11,} {pp:>8} "
              f"{r['flops'] / 1e6:>10,.1f} {pf:>8}")
    return 0


def cmd_data_info(a: argparse.Namespace) -> int:
    from bench import data

    info = data.info(a.dataset, root=a.root)
    if a.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        for k, v in info.items():
            print(f"{k}: {v}")
    return 0


def cmd_data_fetch(a: argparse.Namespace) -> int:
    from bench import data

    print(f"{a.dataset} ready in {data.fetch(a.dataset, root=a.root)}")
    return 0


def cmd_plan(a: argparse.Namespace) -> int:
    from bench.plan import plan

    print(plan(a.suite, profile=a.profile, dataset=a.dataset, seeds=a.seeds, probe=not a.no_probe))
    return 0


def _sequential_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--until-decided", action="store_true",
                   help="start with the profile's seeds and add one seed at a time to the cells of claims still "
                        "open, until every claim is decided or futile (a sequential test that keeps each claim's "
                        "alpha; see the README)")
    p.add_argument("--max-seeds", type=int, help="with --until-decided: at most this many seeds per cell "
                                                  "(default: 10, or the profile's seeds if more)")
    p.add_argument("--budget", help="with --until-decided: stop before a wave that would pass this wall time "
                                    "(90s, 45m, 2h, 1h30m)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="bench", description="Residual-network ablation bench")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("run", help="run a suite's trials on Ray, logging to MLflow")
    _suite_arg(p)
    p.add_argument("--profile", default="paper")
    p.add_argument("--dataset", help="run on another dataset than the suite's (e.g. fashion-mnist)")
    p.add_argument("--seeds", type=int, help="number of seeds (0..N-1), overriding the profile")
    p.add_argument("--first-seed", type=int, default=0,
                   help="number the seeds from here (e.g. 1000 for pilot runs kept apart from the reported seeds)")
    p.add_argument("--cells", nargs="+", help="only these cell ids (teachers are added as needed)")
    p.add_argument("--address", help="join an existing Ray cluster (default: embedded local Ray)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///./mlflow.db)")
    p.add_argument("--data-root", help="dataset directory (default: the dataset's standard place)")
    p.add_argument("--num-cpus", type=int, help="CPUs for the embedded local Ray (default: all)")
    p.add_argument("--storage", help="where trial checkpoints and Ray results live (default: ./.bench); on a "
                                     "multi-node cluster a path every node shares")
    p.add_argument("--max-failures", type=int, default=2,
                   help="restarts of a trial whose worker dies, from its last epoch checkpoint (default: 2)")
    p.add_argument("--max-trials", type=int, help="run more than 1,000 trials (the count, as a check)")
    p.add_argument("--yes", action="store_true", help="run however many trials the suite expands to")
    p.add_argument("--speed", choices=["off", "auto"], default="auto",
                   help="runtime speed settings per device (channels_last, compile, fused optimizer); "
                        "off = NCHW eager. Recorded as speed.* tags, not part of the config hash")
    _sequential_flags(p)
    p.set_defaults(fn=cmd_run)

    addr_help = "Ray Jobs API of the cluster's head, http://HEAD:8265 (default: $BENCH_JOBS_ADDRESS or $RAY_ADDRESS)"
    p = sub.add_parser("submit", help="run a suite on a Ray cluster as a Ray job; prints the job id")
    _suite_arg(p)
    p.add_argument("--profile", default="paper")
    p.add_argument("--dataset")
    p.add_argument("--seeds", type=int)
    p.add_argument("--cells", nargs="+")
    p.add_argument("--tracking-uri", help="default: $BENCH_TRACKING_URI on the head, else http://HEAD:5000")
    p.add_argument("--storage", help="Ray storage path every node shares (passed to bench run)")
    p.add_argument("--address", help=addr_help)
    p.add_argument("--wait", action="store_true", help="follow the job's logs; exit 0 if it succeeded, else 1")
    _sequential_flags(p)
    p.set_defaults(fn=cmd_submit)

    p = sub.add_parser("jobs", help="the cluster's jobs: id, suite, profile, status, start, duration")
    p.add_argument("--address", help=addr_help)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_jobs)
    for name, fn, text in (("status", cmd_status, "a job's status"), ("logs", cmd_logs, "a job's output"),
                           ("stop", cmd_stop, "stop a job; its unfinished runs end KILLED")):
        p = sub.add_parser(name, help=text)
        p.add_argument("job", help="job id (from bench submit or bench jobs)")
        p.add_argument("--address", help=addr_help)
        if name == "logs":
            p.add_argument("--follow", "-f", action="store_true")
        p.set_defaults(fn=fn)

    p = sub.add_parser("server", help="the cluster's MLflow tracking server (database + proxied artifacts)")
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 exposes it to the network (unauthenticated "
                                                         "without --auth)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--store", help="directory (sqlite DIR/mlflow.db, DIR/mlartifacts; default .) or a "
                                   "SQLAlchemy URI such as postgresql://user@db/mlflow")
    p.add_argument("--workers", type=int, help="server worker processes (mlflow's default otherwise)")
    p.add_argument("--auth", action="store_true",
                   help="MLflow's basic auth; the admin's credentials are made on first start, in "
                        "STORE_DIR/credentials (0600)")
    p.set_defaults(fn=cmd_server)

    p = sub.add_parser("report", help="paper-vs-reproduction report from the MLflow runs")
    _suite_arg(p)
    p.add_argument("--tracking-uri")
    p.add_argument("--out", help="output directory (default: ./reports/SUITE in the working directory)")
    p.add_argument("--profile", help="default: the profile of the newest bench run")
    p.add_argument("--dataset", help="default: the dataset of the newest bench run")
    p.add_argument("--print", action="store_true", help="print the markdown report")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("plan", help="trials, resources and an estimate of the compute, before running")
    _suite_arg(p)
    p.add_argument("--profile", default="paper")
    p.add_argument("--dataset")
    p.add_argument("--seeds", type=int)
    p.add_argument("--no-probe", action="store_true", help="use recorded throughput instead of measuring here")
    p.set_defaults(fn=cmd_plan)

    p = sub.add_parser("list", help="suites and their cells")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_list)

    p = sub.add_parser("models", help="registered models with measured params and FLOPs")
    p.add_argument("--json", action="store_true")
    p.add_argument("--family")
    p.set_defaults(fn=cmd_models)

    p = sub.add_parser("data", help="datasets")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    q = dsub.add_parser("info", help="split sizes, image shape and classes, read from the files")
    q.add_argument("dataset")
    q.add_argument("--root")
    q.add_argument("--json", action="store_true")
    q.set_defaults(fn=cmd_data_info)
    q = dsub.add_parser("fetch", help="download (with MD5 check) into the dataset's directory")
    q.add_argument("dataset")
    q.add_argument("--root")
    q.set_defaults(fn=cmd_data_fetch)
    return ap


def main(argv: list[str] | None = None) -> int:
    mark("cli.main")
    a = parser().parse_args(argv)
    try:
        rc = a.fn(a)
        sys.stdout.flush()  # a closed pipe surfaces here, not in the interpreter's exit-time flush
        return rc
    except BrokenPipeError:
        # The reader went away (`bench list | head -1`): stop quietly. Point stdout at devnull so the
        # exit-time flush of what is still buffered cannot raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("bench: interrupted; unfinished trials are marked KILLED and resume from their checkpoints on the "
              "next run", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
