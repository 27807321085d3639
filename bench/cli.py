"""The `bench` command. Every user error is one line on stderr and a non-zero exit (2 for bad input)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench import BenchError


def _suite_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", help="suite name (suites/NAME.yaml) or path to a suite YAML")


def cmd_run(a: argparse.Namespace) -> int:
    from rich.console import Console

    from bench.run.driver import run_suite

    console = Console()
    s = run_suite(a.suite, profile=a.profile, dataset=a.dataset, seeds=a.seeds, cells=a.cells, address=a.address,
                  tracking_uri=a.tracking_uri, data_root=a.data_root, num_cpus=a.num_cpus, argv=sys.argv,
                  console=console, speed=a.speed)
    console.print(f"suite {s.suite}: {len(s.finished)} finished, {len(s.failed)} failed, {s.skipped} skipped "
                  f"in {s.wall_s:.1f} s")
    for name, err in s.failed.items():
        console.print(f"  FAILED {name}: {err}", highlight=False)
    console.print(f"next: bench report {a.suite}" + (f" --tracking-uri {a.tracking_uri}" if a.tracking_uri else ""))
    return 1 if s.failed else 0


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
        print(f"open {res.out_dir / 'report.html'}; browse runs with: mlflow ui --backend-store-uri {uri}")
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


def cmd_speed(a: argparse.Namespace) -> int:
    from bench.speed import run

    return run(a)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="bench", description="Residual-network ablation bench")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("run", help="run a suite's trials on Ray, logging to MLflow")
    _suite_arg(p)
    p.add_argument("--profile", default="paper")
    p.add_argument("--dataset", help="run on another dataset than the suite's (e.g. fashion-mnist)")
    p.add_argument("--seeds", type=int, help="number of seeds (0..N-1), overriding the profile")
    p.add_argument("--cells", nargs="+", help="only these cell ids (teachers are added as needed)")
    p.add_argument("--address", help="join an existing Ray cluster (default: embedded local Ray)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///./mlflow.db)")
    p.add_argument("--data-root", help="dataset directory (default: the dataset's standard place)")
    p.add_argument("--num-cpus", type=int, help="CPUs for the embedded local Ray (default: all)")
    p.add_argument("--speed", choices=["off", "auto"], default="auto",
                   help="runtime speed settings per device (channels_last, compile, fused optimizer); "
                        "off = NCHW eager. Recorded as speed.* tags, not part of the config hash")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("report", help="paper-vs-reproduction report from the MLflow runs")
    _suite_arg(p)
    p.add_argument("--tracking-uri")
    p.add_argument("--out", help="output directory (default: reports/SUITE)")
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

    p = sub.add_parser("speed", help="training throughput: harness vs a bare loop, speed settings on and off")
    from bench.speed import add_arguments  # light: torch only at import
    add_arguments(p)
    p.set_defaults(fn=cmd_speed)

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
    a = parser().parse_args(argv)
    try:
        return a.fn(a)
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("bench: interrupted; finished trials are kept in the tracking store", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
