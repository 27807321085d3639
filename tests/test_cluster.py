"""cluster.yaml must pass Ray's own cluster-launcher validation, offline."""

from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parent.parent / "cluster.yaml"


def test_cluster_yaml_passes_ray_validation():
    cfg = prepare_config(yaml.safe_load(CLUSTER.read_text()))
    validate_config(cfg)
    gpus = [t["resources"].get("GPU", 0) for t in cfg["available_node_types"].values()]
    assert max(gpus) >= 1, "the cluster must offer GPU worker nodes"
    assert cfg["head_node_type"] in cfg["available_node_types"]


def test_broken_cluster_yaml_is_rejected():
    cfg = yaml.safe_load(CLUSTER.read_text())
    del cfg["available_node_types"]["gpu_a10g_x4"]["node_config"]
    with pytest.raises(Exception, match="node_config"):
        validate_config(prepare_config(cfg))


# ---- feasibility against the autoscaler's node types (pure) ---------------------------------------------------

from bench.run import cluster as placement  # noqa: E402
from bench.spec import Resources  # noqa: E402

TYPES = placement.node_types_from_config(yaml.safe_load(CLUSTER.read_text()))


def _why(**r):
    return placement.infeasible(placement.bundles(Resources(**r)), TYPES)


def test_shipped_node_types_are_read_with_the_head_counted_once():
    by = {t["name"]: t for t in TYPES}
    assert by["head"]["max"] == 1 and by["head"]["resources"].get("CPU") == 0
    assert max(t["resources"].get("GPU", 0) for t in TYPES) == 8


def test_what_a_node_type_could_hold_is_feasible_before_any_node_scaled_up():
    assert _why(cpus=4, gpus=0.25) is None                      # a CIFAR trial on a 4-GPU node
    assert _why(cpus=8, gpus=1, workers=8) is None              # data-parallel over 8 GPUs (several nodes)
    assert _why(cpus=96, gpus=8) is None


def test_what_no_node_type_could_hold_is_refused():
    assert "no node type holds" in _why(cpus=4, gpus=16)        # one bundle bigger than any node
    assert "add up to 32" in _why(cpus=1, gpus=1, workers=64)   # 64 GPUs; 4x4 + 2x8 = 32 at most
    assert "no node type holds" in placement.infeasible([{"CPU": 1, "TPU": 1}], TYPES)


def test_unbounded_node_types_and_no_usable_type():
    free = [{"name": "g", "resources": {"CPU": 8, "GPU": 1}, "max": -1}]
    assert placement.infeasible([{"CPU": 1, "GPU": 1}] * 100, free) is None
    assert "none" in placement.infeasible([{"CPU": 1}], [{"name": "h", "resources": {"CPU": 4}, "max": 0}])


def test_check_resources_uses_node_types_over_current_resources():
    from rich.console import Console

    from bench.run.driver import check_resources
    from bench.run.ray_exec import ClusterError
    from tests.helpers import expand

    from bench.spec import load_suite

    trials = expand(load_suite("quickstart"), "paper")           # cpus 4, gpus 0.25 per trial
    head_only = {"CPU": 0.0}
    with pytest.raises(ClusterError, match="GPU"):
        check_resources(trials, head_only, embedded=False, console=Console())
    assert len(check_resources(trials, head_only, embedded=False, console=Console(), node_types=TYPES)) == len(trials)
    tiny = [{"name": "cpu", "resources": {"CPU": 2}, "max": 3}]
    with pytest.raises(ClusterError, match="can never be scheduled"):
        check_resources(trials, head_only, embedded=False, console=Console(), node_types=tiny)


def test_a_wave_starts_its_longest_trials_first():
    from dataclasses import replace

    from bench import data
    from bench.run.driver import longest_first
    from bench.spec import load_suite
    from tests.helpers import expand

    trials = expand(load_suite("quickstart"), "reduced")                  # plan order: plain20, plain56, ...
    ds = data.load("synthetic", n_train=64, n_test=16, channels=1, size=28)
    order = [t.cell for t in longest_first(trials, ds)]
    assert order[:6] == ["plain56"] * 3 + ["resnet56"] * 3              # equal costs keep the plan's order
    assert sorted(order[6:]) == ["plain20"] * 3 + ["resnet20"] * 3
    # Cost is per-image work x images: a 56-layer net (~3x the work) trained 1 epoch of 4 comes after a
    # 20-layer net trained all 4.
    r20, r56 = (next(t for t in trials if t.cell == c) for c in ("resnet20", "resnet56"))
    r56_short = replace(r56, protocol=r56.protocol.model_copy(update={"epochs": 1}))
    assert [t.cell for t in longest_first([r56_short, r20], ds)] == ["resnet20", "resnet56"]


def test_node_types_from_a_declared_autoscaler_config(tmp_path, monkeypatch):
    """Without a GCS cluster config, bench reads the cluster-launcher file the head was started with."""
    from bench.run import ray_exec

    f = tmp_path / "bootstrap.yaml"
    f.write_text(CLUSTER.read_text())
    monkeypatch.setenv("BENCH_AUTOSCALER_CONFIG", str(f))
    assert {t["name"] for t in ray_exec.node_types()} == {"head", "gpu_a10g_x4", "gpu_a100_x8"}
    monkeypatch.setenv("BENCH_AUTOSCALER_CONFIG", str(tmp_path / "missing.yaml"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert ray_exec.node_types() is None


def test_sqlite_store_is_refused_on_a_multi_node_cluster_only():
    placement.check_shared_store("sqlite:////tmp/x.db", 1)
    placement.check_shared_store("http://head:5000", 3)
    with pytest.raises(placement.PlacementError, match="bench server"):
        placement.check_shared_store("sqlite:////tmp/x.db", 2)


def test_server_command_binds_localhost_with_a_database_and_proxied_artifacts(tmp_path):
    from bench import server

    cmd = server.command("127.0.0.1", 5001, str(tmp_path))
    assert cmd[cmd.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert cmd[cmd.index("--artifacts-destination") + 1] == str(tmp_path / "mlartifacts")
    assert "--serve-artifacts" in cmd and cmd[cmd.index("--host") + 1] == "127.0.0.1"
    pg = server.command("0.0.0.0", 5000, "postgresql://u@db/mlflow")
    assert pg[pg.index("--backend-store-uri") + 1] == "postgresql://u@db/mlflow"


def test_report_header_counts_trials_per_host_and_node():
    import pandas as pd

    from bench.report.tables import summarize_runs

    runs = pd.DataFrame({"tags.bench.host": ["vm-a"] * 4 + ["vm-b"] * 4,
                         "tags.bench.node_id": ["n1"] * 4 + ["n2"] * 4})
    s = summarize_runs(runs)
    assert s["hosts"] == ["vm-a ×4", "vm-b ×4"] and s["ray_nodes"] == 2


def test_job_entrypoint_defaults_to_the_heads_tracking_server():
    from bench.run import jobs

    uri = jobs.default_tracking_uri("http://10.0.0.5:8265")
    cmd = jobs.entrypoint("q.yaml", profile="smoke", dataset=None, seeds=None, cells=["a", "b"], tracking_uri=uri,
                          storage="/mnt/shared")
    assert cmd.endswith('--tracking-uri "${BENCH_TRACKING_URI:-http://10.0.0.5:5000}"')
    assert "--address auto" in cmd and "--cells a b" in cmd and "--storage /mnt/shared" in cmd


# ---- real processes: a 2-node Ray cluster and a bench server on this machine -----------------------------------

import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from tests.fixtures_cluster import bench_env, free_ports  # noqa: E402


def _bench(args, cwd, timeout=240):
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=bench_env())


def _runs(uri, suite):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(f"bench/{suite}")
    return [] if exp is None else c.search_runs([exp.experiment_id], max_results=1000)


def _error_line(r):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and lines and lines[-1].startswith("bench: error: "), r.stdout + r.stderr
    return lines[-1]


def _main(args, cwd):
    """In this process: the time bounds below then measure bench's own probing (seconds, against minutes of client
    retries), not a fresh interpreter's imports, which take a loaded 2-core box tens of seconds."""
    from helpers import run_cli

    return run_cli(args, cwd)


def test_unreachable_head_is_a_one_line_error_in_seconds(tmp_path):
    import bench.run.jobs  # noqa: F401 - imported before the clock starts: the bound is on the probe
    port = free_ports(1)[0]
    t = time.time()
    r = _main(["jobs", "--address", f"http://127.0.0.1:{port}"], tmp_path)
    assert "cannot reach Ray Jobs API" in _error_line(r) and time.time() - t < 20


def test_unreachable_tracking_server_fails_before_ray_starts(tmp_path):
    import ray

    import bench.run.driver  # noqa: F401 - imported before the clock starts: the bound is on the probe
    port = free_ports(1)[0]
    t = time.time()
    r = _main(["run", "quickstart", "--profile", "smoke", "--tracking-uri", f"http://127.0.0.1:{port}"], tmp_path)
    assert "cannot reach the tracking server" in _error_line(r)
    assert time.time() - t < 30 and "Ray" not in r.stdout and not ray.is_initialized()


@pytest.mark.slow
def test_submit_wait_runs_trials_on_both_nodes(cl, tmp_path):
    from mlflow.tracking import MlflowClient

    t0 = time.time()
    p = subprocess.Popen([sys.executable, "-m", "bench.cli", "submit", "quickstart", "--profile", "smoke", "--wait",
                          "--address", cl.jobs, "--tracking-uri", cl.tracking, "--storage", str(tmp_path / "shared")],
                         cwd=tmp_path, env=bench_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = None
    while p.poll() is None and first is None:       # submit-to-first-trial latency, as a user would see it
        if any(r.info.status in ("RUNNING", "FINISHED") and r.data.tags.get("bench.kind") == "trial"
               for r in _runs(cl.tracking, "quickstart")):
            first = time.time() - t0
        time.sleep(0.5)
    out, err = p.communicate(timeout=240)
    total = time.time() - t0
    print(f"\nsubmit->first trial RUNNING {first} s; submit->job done {total:.1f} s")
    assert p.returncode == 0, out[-3000:] + err[-3000:]
    job_id = out.splitlines()[0].strip()
    assert job_id.startswith("bench-quickstart-smoke-") and "8 finished, 0 failed" in out

    runs = _runs(cl.tracking, "quickstart")
    parents = [r for r in runs if r.data.tags.get("bench.kind") == "parent"]
    children = [r for r in runs if r.data.tags.get("bench.kind") == "trial"]
    assert len(parents) == 1 and len(children) == 8
    assert all(r.info.status == "FINISHED" for r in runs)
    nodes = {r.data.tags.get("bench.node_id") for r in children}
    assert None not in nodes and len(nodes) == 2, nodes           # 1 CPU per node, 8 one-CPU trials
    assert all(r.data.tags.get("bench.node_ip") for r in children)
    from bench.track import git_commit   # the job's copy has no .git: the runs carry the submitter's commit
    assert {r.data.tags.get("bench.git_commit") for r in runs} == {git_commit()} != {"unknown"}
    # Artifacts went through the server's proxy, not to a path on a node.
    assert MlflowClient(cl.tracking).get_experiment_by_name("bench/quickstart").artifact_location.startswith(
        "mlflow-artifacts:")

    # The head's PATH starts with a bare python (fixtures_cluster): the job ran under the workers' interpreter,
    # the venv's, where it used to run the bare one and fail with No module named 'rich'.
    from ray.job_submission import JobSubmissionClient

    from tests.fixtures_cluster import BIN

    exe = JobSubmissionClient(cl.jobs).get_job_info(job_id).entrypoint.split()[0]
    assert Path(exe).parent == BIN, exe

    lst = _bench(["jobs", "--address", cl.jobs], tmp_path)
    row = next(ln for ln in lst.stdout.splitlines() if ln.startswith(job_id))
    assert "quickstart" in row and "smoke" in row and "SUCCEEDED" in row
    st = _bench(["status", job_id, "--address", cl.jobs], tmp_path)
    assert st.returncode == 0 and "SUCCEEDED" in st.stdout


@pytest.mark.slow
def test_multi_node_cluster_without_storage_is_refused_before_a_job_exists(cl, tmp_path):
    """bench submit counts the nodes through the dashboard (it never joins the cluster) and refuses at once; the
    job used to be created and fail 24 s later inside `bench run`."""
    from ray.job_submission import JobSubmissionClient

    before = {j.submission_id for j in JobSubmissionClient(cl.jobs).list_jobs()}
    r = _bench(["submit", "quickstart", "--profile", "smoke", "--address", cl.jobs, "--tracking-uri", cl.tracking],
               tmp_path)
    line = _error_line(r)
    assert "2 nodes" in line and "--storage" in line and r.stdout == ""
    assert {j.submission_id for j in JobSubmissionClient(cl.jobs).list_jobs()} == before


def _slow_suite(tmp_path):
    """quickstart's smoke profile, long enough (many epochs) to be stopped mid-run, as its own suite."""
    raw = yaml.safe_load((CLUSTER.parent / "suites" / "quickstart.yaml").read_text())
    raw["name"] = "clusterstop"
    raw["profiles"]["smoke"]["protocol"]["epochs"] = 400
    f = tmp_path / "clusterstop.yaml"
    f.write_text(yaml.safe_dump(raw))
    return f


@pytest.mark.slow
def test_stop_mid_run_leaves_no_run_running(cl, tmp_path):
    sub = _bench(["submit", str(_slow_suite(tmp_path)), "--profile", "smoke", "--seeds", "1", "--address", cl.jobs,
                  "--tracking-uri", cl.tracking, "--storage", str(tmp_path / "shared")], tmp_path)
    assert sub.returncode == 0, sub.stderr
    job_id = sub.stdout.strip()
    end = time.time() + 120
    while time.time() < end and not any(r.info.status == "RUNNING" and r.data.tags.get("bench.kind") == "trial"
                                        for r in _runs(cl.tracking, "clusterstop")):
        time.sleep(0.5)
    assert time.time() < end, "no trial started"
    stop = _bench(["stop", job_id, "--address", cl.jobs], tmp_path)
    assert stop.returncode == 0 and "STOPPED" in stop.stdout, stop.stdout + stop.stderr
    end = time.time() + 15                       # the driver ends its open runs as it exits
    while time.time() < end:
        runs = _runs(cl.tracking, "clusterstop")
        if not [r for r in runs if r.info.status in ("RUNNING", "SCHEDULED")]:
            break
        time.sleep(1)
    assert runs and not [(r.info.run_name, r.info.status) for r in runs if r.info.status in ("RUNNING", "SCHEDULED")]
    assert any(r.info.status == "KILLED" for r in runs)
    # Ray SIGKILLs a stopped job's driver 3 s after SIGTERM by default; the job gives it longer to end its runs.
    from ray.job_submission import JobSubmissionClient

    from bench.run.jobs import STOP_GRACE_S

    env = JobSubmissionClient(cl.jobs).get_job_info(job_id).runtime_env["env_vars"]
    assert env["RAY_JOB_STOP_WAIT_TIME_S"] == str(STOP_GRACE_S)


@pytest.mark.slow
def test_bad_input_is_refused_cleanly_and_creates_nothing(cl, tmp_path):
    before = _bench(["jobs", "--address", cl.jobs, "--json"], tmp_path)
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: broken\nprofiles: [not, a, mapping\n")
    assert "broken.yaml" in _error_line(_bench(["submit", str(bad), "--address", cl.jobs], tmp_path))
    after = _bench(["jobs", "--address", cl.jobs, "--json"], tmp_path)
    assert before.stdout == after.stdout                            # nothing was submitted
    assert _runs(cl.tracking, "broken") == []

    assert "no job 'nope'" in _error_line(_bench(["status", "nope", "--address", cl.jobs], tmp_path))
    assert "no job" in _error_line(_bench(["stop", "nope", "--address", cl.jobs], tmp_path))

    db = tmp_path / "mlflow.db"
    r = _bench(["run", "quickstart", "--profile", "smoke", "--address", cl.gcs, "--tracking-uri", f"sqlite:///{db}"],
               tmp_path)
    assert "cannot reach it" in _error_line(r) and "bench server" in _error_line(r)
    assert not db.exists()


def _packing_suite(tmp_path):
    """quickstart's smoke cells at half a CPU and half a GPU each: two trials fit a node at once."""
    raw = yaml.safe_load((CLUSTER.parent / "suites" / "quickstart.yaml").read_text())
    raw["name"] = "clusterpack"
    raw["profiles"]["smoke"]["resources"] = {"cpus": 0.5, "gpus": 0.5}
    f = tmp_path / "clusterpack.yaml"
    f.write_text(yaml.safe_dump(raw))
    return f


@pytest.mark.slow
def test_fractional_gpu_trials_pack_two_to_a_node(cl, tmp_path):
    r = _bench(["run", str(_packing_suite(tmp_path)), "--profile", "smoke", "--seeds", "1", "--address", cl.gcs,
                "--tracking-uri", cl.tracking, "--storage", str(tmp_path / "shared")], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    trials = [x for x in _runs(cl.tracking, "clusterpack") if x.data.tags.get("bench.kind") == "trial"]
    assert len(trials) == 4 and all(x.info.status == "FINISHED" for x in trials)
    by_node: dict[str, set[str]] = {}
    for x in trials:
        by_node.setdefault(x.data.tags["bench.node_id"], set()).add(x.data.tags["bench.pid"])
    # Tune reuses a finished trial's actor for the next one, so two worker processes on one node means two
    # trials held that node's one GPU at the same time. Which node packs first is the scheduler's choice.
    assert len(by_node) == 2 and max(len(pids) for pids in by_node.values()) >= 2, by_node


DDP_SUITE = """
name: clusterddp
title: a data-parallel trial across two nodes
paper: {citation: test, ref: none, dataset: synthetic}
dataset: synthetic
cells:
  - {id: r20, model: resnet20, row: r20}
# 8 train images, global batch 4 = 2 per worker: 2 steps an epoch. 3 iterations end mid-epoch, so the final
# evaluation after fit runs under DDP too.
protocol: {batch_size: 4, iterations: 3, train_subset: 8, test_subset: 6, schedule: {kind: constant}}
seeds: 1
# 0.75 CPU per worker: two workers cannot share a 1-CPU node, so Ray Train must place them on both.
resources: {cpus: 0.75, workers: 2}
"""


@pytest.mark.slow
def test_a_data_parallel_trial_spans_both_nodes(cl, tmp_path):
    """The real data-parallel path: a Tune trial (worker.trainable) runs a Ray Train TorchTrainer whose two
    workers train with Lightning's RayDDPStrategy over gloo, one on each node, logging through the tracking
    server. (Also what tests/test_ddp.py checked in-process before; one run covers both.)"""
    import json
    import math

    from mlflow.tracking import MlflowClient

    (tmp_path / "ddp.yaml").write_text(DDP_SUITE)
    r = _bench(["run", str(tmp_path / "ddp.yaml"), "--address", cl.gcs, "--tracking-uri", cl.tracking,
                "--storage", str(tmp_path / "shared")], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    (run,) = [x for x in _runs(cl.tracking, "clusterddp") if x.data.tags.get("bench.kind") == "trial"]
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["bench.world_size"] == "2" and tags["bench.device"].startswith("2×")
    info = json.loads(tags["bench.ranks"])
    ranks = info["ranks"]
    assert info["world_size"] == 2 and [x["rank"] for x in ranks] == [0, 1]
    # gloo rendezvous through rank 0's address: the two ranks ran on two different Ray nodes.
    assert len({x["node_id"] for x in ranks}) == 2
    # Both ranks trained every step, each on its own half of the 8 images; the shards did not overlap.
    assert [x["steps"] for x in ranks] == [3, 3]
    assert [x["shard_size"] for x in ranks] == [4, 4] and info["shard_overlap"] == 0
    assert [x["train_images"] for x in ranks] == [6, 6]   # 3 steps × 2 images, per rank
    # The epoch sums were all-reduced: each rank's records count both ranks' images.
    assert {x["train_images_all_ranks"] for x in ranks} == {12}

    m = run.data.metrics
    assert "best_test_error" not in m
    for k in ("train_loss", "train_error", "test_loss", "test_error", "lr", "images_per_sec",
              "wall_time_s", "mean_images_per_sec"):
        assert math.isfinite(m[k]), k
    assert 0 <= m["test_error"] <= 1 and 0 <= m["train_error"] <= 1
    c = MlflowClient(cl.tracking)
    assert [h.step for h in c.get_metric_history(run.info.run_id, "train_loss")] == [2, 3]  # per epoch, step = iter
    assert [h.step for h in c.get_metric_history(run.info.run_id, "test_error")] == [2, 3]
    assert [a.path for a in c.list_artifacts(run.info.run_id)] == ["curve.csv"]
    # Rank 0's reports reached the Tune trial through Ray Train; the last one is the final evaluation after fit.
    (state,) = (tmp_path / "shared" / "ray_results").rglob("experiment_state-*.json")
    ((_, meta),) = json.loads(state.read_text())["trial_data"]
    last = json.loads(meta)["last_result"]
    assert last["run_id"] == run.info.run_id and last["step"] == 3 and "test_error" in last


@pytest.mark.slow
def test_fitnet_student_gets_its_teacher_through_the_tracking_server(cl, tmp_path):
    """The teacher's weights reach the student as an artifact proxied by `bench server` (HTTP), never as a file
    of the teacher's node: that is what lets a student on node B use a teacher trained on node A."""
    r = _bench(["run", "highway_fitnet", "--profile", "smoke", "--cells", "fitnet1", "--address", cl.gcs,
                "--tracking-uri", cl.tracking, "--storage", str(tmp_path / "shared")], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    runs = {x.data.tags["bench.cell"]: x for x in _runs(cl.tracking, "highway_fitnet")
            if x.data.tags.get("bench.kind") == "trial"}
    teacher, student = runs["teacher"], runs["fitnet1"]
    assert teacher.info.status == student.info.status == "FINISHED"
    assert student.data.tags["bench.teacher_run"] == teacher.info.run_id
    assert teacher.info.artifact_uri.startswith("mlflow-artifacts:")      # served by the tracking server
    stored = list((cl.root / "mlflow" / "mlartifacts").rglob("model.pt"))
    assert len(stored) == 1 and teacher.info.run_id in str(stored[0])
    assert {teacher.data.tags["bench.node_id"], student.data.tags["bench.node_id"]} <= cl.node_ids()
