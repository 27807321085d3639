"""The CLI's read-only commands, as a user calls them (exit codes, one-line errors, JSON shapes).

They run `bench.cli.main` in this process, which is what the `bench` script calls: a fresh interpreter would
only add seconds of imports per call. The installed script itself, in its own process, is driven end to end
by tests/test_packaging.py, and the closed-pipe test below needs (and uses) a real process.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bench as bench_pkg

from fixtures_data import write_cifar10, write_poisoned_pickle
from helpers import run_cli


def bench(*args, cwd=None, timeout=None):   # timeout: kept for call sites; in-process calls have none
    return run_cli(args, cwd)


def test_list_json_has_all_suites_with_cells():
    r = bench("list", "--json")
    assert r.returncode == 0, r.stderr
    suites = {s["name"]: s for s in json.loads(r.stdout)}
    assert {"quickstart", "resnet_cifar", "degradation", "preact", "resnext_imagenet", "resnext_cifar", "densenet",
            "highway_fitnet", "highway_depth", "insights"} <= set(suites)
    assert [c["id"] for c in suites["quickstart"]["cells"]] == ["plain20", "plain56", "resnet20", "resnet56"]


def test_models_json_lists_measured_counts():
    r = bench("models", "--json")
    assert r.returncode == 0, r.stderr
    rows = {m["name"]: m for m in json.loads(r.stdout)}
    assert rows["resnet20"]["params"] == 269722 and rows["resnet20"]["paper_params"] == pytest.approx(0.27e6)
    assert rows["resnet50"]["flops"] == pytest.approx(4.1e9, rel=0.05)
    assert all(m["flops"] > 0 and m["params"] > 0 for m in rows.values())


def test_data_info_reads_cifar10_official_layout(tmp_path):
    write_cifar10(tmp_path, n_per_batch=10, n_test=8)
    r = bench("data", "info", "cifar10", "--root", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["splits"] == {"train": 50, "test": 8}
    assert info["num_classes"] == 10 and info["classes"][0] == "airplane"


def test_data_info_refuses_a_poisoned_batch(tmp_path):
    root = write_cifar10(tmp_path, n_per_batch=10, n_test=8)
    marker = tmp_path / "pwned"
    write_poisoned_pickle(root / "data_batch_3", marker)
    r = bench("data", "info", "cifar10", "--root", str(tmp_path))
    assert r.returncode == 1
    assert "data_batch_3" in r.stderr and "refus" in r.stderr and r.stderr.count("\n") == 1
    assert not marker.exists()


def test_plan_preact_paper_counts_50_trials():
    r = bench("plan", "preact", "--profile", "paper", "--no-probe")
    assert r.returncode == 0, r.stderr
    assert "50 trials = 10 cells x 5 seeds" in r.stdout
    assert "GPU-hours from recorded H100 anchors" in r.stdout


def test_plan_counts_the_net_each_cell_runs():
    """MFLOPs come from the net a trial builds (width, a proxy's depth, the data's 28×28), not the default net."""
    from bench.plan import plan

    def mflops(profile):
        rows = [ln.split() for ln in plan("preact", profile, probe=False).splitlines()]
        return {r[0]: float(r[5].replace(",", "")) for r in rows if r and r[0].startswith("preresnet")}

    paper, reduced = mflops("paper"), mflops("reduced")
    assert 240 <= paper["preresnet110_a"] <= 270          # ResNet-110 at 32×32: 253M multiply-adds
    # the reduced cell is ResNet-32 at width 8 on 28×28: about (32/110) × (1/4) × (28/32)² of it
    assert 10 <= reduced["preresnet110_a"] <= 20
    assert reduced["preresnet164_a"] != reduced["preresnet110_a"]


def test_plan_probe_measures_here():
    r = bench("plan", "quickstart", "--profile", "smoke")
    assert r.returncode == 0, r.stderr
    assert "from a probe measured now" in r.stdout


def test_unknown_suite_and_profile_exit_2(tmp_path):
    r = bench("run", "no_such_suite", cwd=tmp_path)
    assert r.returncode == 2 and "no such suite file" in r.stderr
    r = bench("run", "quickstart", "--profile", "fast", cwd=tmp_path)
    assert r.returncode == 2 and "unknown profile 'fast'" in r.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_report_without_a_store_creates_nothing(tmp_path):
    r = bench("report", "quickstart", cwd=tmp_path)
    assert r.returncode == 1 and "no tracking store" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_report_against_an_unreachable_server_fails_in_seconds(tmp_path):
    """MLflow's client retries a refused connection for about five minutes; the report must not."""
    import socket
    import time

    with socket.socket() as s:   # a port nothing listens on: bound, never listened to
        s.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{s.getsockname()[1]}"
        t0 = time.time()
        r = bench("report", "quickstart", "--tracking-uri", uri, cwd=tmp_path, timeout=60)
        took = time.time() - t0
    assert r.returncode != 0 and took < 20, (took, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error: cannot reach the tracking server at " + uri), lines
    assert r.stdout == "" and list(tmp_path.iterdir()) == []


TINY_SUITE = """
name: tiny
title: "Tiny table"
paper: {citation: "He et al. 2015", ref: "Table 9", dataset: cifar10}
dataset: cifar10
layout: {rows: depth, cols: net, metric: test_error, stat: mean}
protocol: {iterations: 20}
seeds: 1
cells:
  - {id: P20, model: plain20, row: "20", col: plain, paper: {value: 9.0}}
  - {id: R20, model: resnet20, row: "20", col: resnet, paper: {value: 8.75}}
"""


def test_report_default_out_is_reports_in_the_working_directory(tmp_path):
    from bench import track
    from bench.report import REPORTS_DIR
    from helpers import expand
    from bench.spec import load_suite

    (tmp_path / "tiny.yaml").write_text(TINY_SUITE)
    suite = load_suite(tmp_path / "tiny.yaml")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp = track.ensure_experiment(uri, suite.name)
    trials = expand(suite, "paper")
    parent = track.start_parent(uri, exp, suite="tiny", profile="paper", dataset="cifar10", argv=[],
                                n_trials=len(trials), n_skipped=0)
    for t in trials:
        tr = track.TrialTracker(uri, track.create_trial_run(uri, exp, parent, t))
        for step in (10, 20):
            tr.log_metrics({"train_error": 0.5 / step, "test_error": 0.1 if t.cell == "R20" else 0.2}, step)
        tr.finish("FINISHED")

    work = tmp_path / "work"
    work.mkdir()
    r = bench("report", str(tmp_path / "tiny.yaml"), "--tracking-uri", uri, cwd=work)
    assert r.returncode == 0, r.stderr
    assert (work / "reports" / "tiny" / "report.md").is_file()
    assert not REPORTS_DIR.is_absolute()  # never the package's (or a checkout's) own reports/
    assert not (Path(bench_pkg.__file__).resolve().parent.parent / "reports" / "tiny").exists()
    out = tmp_path / "elsewhere"
    r = bench("report", str(tmp_path / "tiny.yaml"), "--tracking-uri", uri, "--out", str(out), cwd=work)
    assert r.returncode == 0, r.stderr
    assert (out / "report.md").is_file()


@pytest.mark.parametrize("args, message", [
    (["run", "no_such_suite"], "no such suite file"),
    (["run", "quickstart", "--profile", "fast"], "unknown profile 'fast'"),
    (["plan", "quickstart", "--profile", "fast", "--no-probe"], "unknown profile 'fast'"),
    (["run", "quickstart", "--profile", "smoke", "--seeds", "0"], "--seeds must be at least 1, got 0"),
    (["run", "quickstart", "--profile", "smoke", "--seeds", "-1"], "--seeds must be at least 1, got -1"),
    (["plan", "quickstart", "--profile", "smoke", "--seeds", "0", "--no-probe"], "--seeds must be at least 1"),
    # A huge plan asks for --max-trials/--yes and is summarised, never listed seed by seed.
    (["run", "quickstart", "--profile", "smoke", "--seeds", "100000"], "more than 1000 trials; pass --max-trials"),
    (["run", "quickstart", "--profile", "smoke", "--dataset", "fashion-mnist", "--data-root", "{tmp}/nowhere"],
     "{tmp}/nowhere does not exist"),
    (["data", "info", "cifar10", "--root", "{tmp}/nowhere"], "{tmp}/nowhere does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, args, message):
    from bench.cli import main

    monkeypatch.chdir(tmp_path)
    rc = main([a.format(tmp=tmp_path) for a in args])
    out, err = capsys.readouterr()
    assert rc == 2, err
    assert err.startswith("bench: error: ") and err.count("\n") == 1 and message.format(tmp=tmp_path) in err
    assert out == "" and list(tmp_path.iterdir()) == []  # nothing run, no store created


def test_closed_pipe_exits_quietly():
    cmd = f"{sys.executable} -m bench.cli list"
    r = subprocess.run(f"{cmd} | head -1", shell=True, capture_output=True, text=True, timeout=120)
    assert r.stdout.startswith("degradation: ") and r.stdout.count("\n") == 1
    assert r.stderr == ""
    # The same without the race: the reader is gone before bench writes anything.
    p = subprocess.Popen([sys.executable, "-m", "bench.cli", "list", "--json"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait(timeout=120) == 1 and err == ""


def test_mlflow_run_url_lines_are_silenced():
    # MLflow's "View run ... at: http://..." lines (one per trial against a tracking server) stay off stdout.
    code = ("import bench\n"
            "from mlflow.environment_variables import MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT as v\n"
            "assert v.get() is True\n")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
