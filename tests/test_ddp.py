"""Data-parallel trials: a 2-worker CPU (gloo) run through the real path — a Ray Tune trial (worker.trainable)
that runs a Ray Train TorchTrainer whose workers train with Lightning's RayDDPStrategy — on synthetic 224×224
data, logging to a real MLflow SQLite store. One run only: a TorchTrainer costs ~20 s of start-up here."""

from __future__ import annotations

import json
import math

import pytest
import torch
from mlflow.tracking import MlflowClient

from bench import data as bdata
from bench import track
from bench.run import ray_exec, worker
from helpers import expand
from bench.spec import load_suite
from bench.data.trial_data import shard_indices
from bench.trials import Trial


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_runtime():
    import ray

    mine = not ray.is_initialized()
    if mine:
        ray_exec.connect(None, num_cpus=2)
    yield
    if mine:
        ray_exec.shutdown()


def test_shards_are_disjoint_balanced_and_seeded():
    for n, world in ((10, 2), (1000, 8), (7, 3)):
        parts = [shard_indices(n, r, world, seed=3) for r in range(world)]
        assert {len(p) for p in parts} == {n // world}
        assert len(set(torch.cat(parts).tolist())) == n // world * world
        assert all(torch.equal(p, shard_indices(n, r, world, seed=3)) for r, p in enumerate(parts))
    assert not torch.equal(shard_indices(100, 0, 2, seed=0), shard_indices(100, 0, 2, seed=1))


def test_two_worker_gloo_trial_through_tune_and_ray_train(ray_runtime, tmp_path):
    suite = load_suite("resnext_imagenet")
    (base,) = expand(suite, "smoke_ddp")
    assert base.resources.workers == 2
    # The tiniest ImageNet-family net at 224×224; global batch 4 = 2 per worker, 4 train images per rank:
    # 2 steps an epoch. 3 iterations end mid-epoch, so the final evaluation after fit runs under DDP too.
    proto = {**base.protocol.model_dump(), "epochs": None, "iterations": 3, "batch_size": 4, "train_subset": 8,
             "test_subset": 6}
    t = Trial.from_dict({**base.to_dict(), "model": "resnet18", "protocol": proto})
    ds = bdata.load("synthetic", size=224, n_train=8, n_test=6)
    assert ds.image_size == 224

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = track.ensure_experiment(uri, suite.name)
    parent = track.start_parent(uri, exp, suite=suite.name, profile="smoke_ddp", dataset="synthetic",
                                argv=["test"], n_trials=1, n_skipped=0)
    rid = track.create_trial_run(uri, exp, parent, t)
    cfg = {"trial": t.to_dict(), "name": t.name, "uri": uri, "run_id": rid, "teacher_run": None,
           "save_checkpoint": False, "ckpt_dir": str(tmp_path / "checkpoints")}
    events: list[tuple[str, str]] = []
    out = ray_exec.run_wave(worker.trainable, [cfg], data=ds, storage=tmp_path / "ray_results", name="ddp",
                            on_event=lambda ev, key, res: events.append((ev, key)),
                            resources=lambda c: Trial.from_dict(c["cfg"]["trial"]).resources.slot())

    track.end_run(uri, parent, "FINISHED")
    o = out[rid]
    assert o.status == "FINISHED", o.error
    # Rank 0's per-epoch reports reached the Tune trial through Ray Train.
    assert ("result", rid) in events
    # (the last one is the final evaluation after fit, at the last step)
    assert o.final["run_id"] == rid and o.final["step"] == 3 and "test_error" in o.final

    c = MlflowClient(uri)
    run = c.get_run(rid)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["bench.world_size"] == "2" and tags["bench.device"].startswith("2×")
    info = json.loads(tags["bench.ranks"])
    ranks = info["ranks"]
    assert info["world_size"] == 2 and [r["rank"] for r in ranks] == [0, 1]
    # Both ranks trained every step, each on its own half of the 8 images; the shards did not overlap.
    assert [r["steps"] for r in ranks] == [3, 3]
    assert [r["shard_size"] for r in ranks] == [4, 4] and info["shard_overlap"] == 0
    assert [r["train_images"] for r in ranks] == [6, 6]  # 3 steps × 2 images, per rank
    # The epoch sums were all-reduced: each rank's records count both ranks' images.
    assert {r["train_images_all_ranks"] for r in ranks} == {12}

    m = run.data.metrics
    assert "best_test_error" not in m
    for k in ("train_loss", "train_error", "test_loss", "test_error", "lr", "images_per_sec",
              "wall_time_s", "mean_images_per_sec"):
        assert math.isfinite(m[k]), k
    assert 0 <= m["test_error"] <= 1 and 0 <= m["train_error"] <= 1
    hist = c.get_metric_history(rid, "train_loss")
    assert [h.step for h in hist] == [2, 3]  # one point per epoch, step = iteration
    assert [h.step for h in c.get_metric_history(rid, "test_error")] == [2, 3]
    assert [a.path for a in c.list_artifacts(rid)] == ["curve.csv"]
