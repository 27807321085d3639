"""run_trial on its own: Lightning on CPU, no Ray, no MLflow."""

import subprocess
import sys

import pytest
import torch

from bench import data
from bench.train.fit import history_csv, run_trial
from bench.trials import Trial
from fixtures_data import write_image_folder


@pytest.fixture(scope="module")
def synth():
    return data.load("synthetic", n_train=96, n_test=32, channels=1)


def trial(seed=0, **proto):
    p = {"batch_size": 32, "epochs": 2, "schedule": {"unit": "fraction", "milestones": [0.5]}, **proto}
    return Trial.adhoc("resnet20", p, cell="c", seed=seed)


def test_same_seed_same_numbers_other_seed_not(synth):
    a = run_trial(trial(), synth)
    b = run_trial(trial(), synth)
    c = run_trial(trial(seed=1), synth)
    assert a.final["train_loss"] == b.final["train_loss"] and a.final["test_error"] == b.final["test_error"]
    assert a.final["train_loss"] != c.final["train_loss"]


def test_epoch_records_and_sinks(synth):
    got = []
    res = run_trial(trial(), synth, sinks=[lambda rec, step: got.append((step, rec))])
    assert [s for s, _ in got] == [3, 6]                     # 96 images / batch 32 = 3 steps per epoch
    assert [r["lr"] for _, r in got] == pytest.approx([0.1, 0.01])   # lr after each epoch: /10 at 50%
    for _, r in got:
        assert {"train_loss", "train_error", "test_error", "test_loss", "images_per_sec", "epoch"} <= set(r)
    # No test-set selection; without a validation split nothing is chosen on validation either.
    assert not {"best_test_error", "best_val_epoch", "best_val_epoch_test_error"} & set(res.final)
    assert history_csv(res.history).splitlines()[0].startswith("step,epoch,")


def test_iterations_ending_mid_epoch_still_evaluate_the_final_weights(synth):
    got = []
    res = run_trial(trial(epochs=None, iterations=4), synth, sinks=[lambda rec, step: got.append((step, rec))])
    assert res.history[-1]["step"] == 4 and "test_error" in res.history[-1]
    assert got[-1][0] == 4 and "test_error" in got[-1][1]


def test_warmup_lr_for_resnet110_style_schedules(synth):
    got = []
    t = trial(epochs=None, iterations=9, schedule={"milestones": [7], "warmup": {"lr": 0.01, "iterations": 3}})
    run_trial(t, synth, sinks=[lambda rec, step: got.append(rec["lr"]) if "lr" in rec else None])
    assert got == pytest.approx([0.01, 0.1, 0.01])   # steps 0-2 warm-up, 3-5 base lr, 6-8 past the milestone


def test_imagenet_folder_streams_through_the_same_trainer(tmp_path):
    root = write_image_folder(tmp_path, n_train=4, n_val=2)
    inet = data.load("imagenet", root=root, size=32)
    t = Trial.adhoc("resnet18", {"batch_size": 4, "epochs": 1, "schedule": {"kind": "constant"}}, cell="r18")
    res = run_trial(t, inet)
    assert res.history[-1]["step"] == 2 and 0 <= res.final["test_error"] <= 1
    assert res.final["params"] > 1e6
    # Multiply-adds per image at the data's 32x32: ResNet-18's 1.8 GMACs at 224x224 scale by about (32/224)^2.
    assert 1.8e9 * (32 / 224) ** 2 / 3 < res.final["macs"] < 1.8e9


def test_training_step_imports_without_ray_and_mlflow():
    code = ("import sys; sys.modules['ray'] = None; sys.modules['mlflow'] = None\n"
            "import bench.train.fit, bench.perf.speed\n"
            "assert 'ray' not in [m.split('.')[0] for m in sys.modules if sys.modules[m] is not None]")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_bad_subset_is_a_clear_error(synth):
    from bench import BenchError
    with pytest.raises(BenchError, match="train_subset 1000 exceeds the 96 training images"):
        run_trial(trial(train_subset=1000), synth)
    # A fractional CPU share (Ray's 0.5) is floored but clamped to one thread, and applied before the error.
    torch.set_num_threads(2)
    half = Trial.from_dict({**trial(train_subset=1000).to_dict(), "resources": {"cpus": 0.5}})
    with pytest.raises(BenchError, match="train_subset 1000"):
        run_trial(half, synth)
    assert torch.get_num_threads() == 1


def test_best_val_epoch_is_chosen_on_validation_not_test():
    from bench.train.fit import _best_val_epoch
    hist = [{"epoch": 1, "val_error": 0.30, "test_error": 0.31}, {"epoch": 2, "val_error": 0.20, "test_error": 0.25},
            {"epoch": 3, "val_error": 0.20, "test_error": 0.22}, {"epoch": 4, "val_error": 0.25, "test_error": 0.10}]
    # Epoch 4 has the lowest test error; validation picks epoch 2 (the first of the tie).
    assert _best_val_epoch(hist) == {"best_val_epoch": 2.0, "best_val_epoch_test_error": 0.25}
    assert _best_val_epoch([{"epoch": 1, "test_error": 0.3}]) == {}
    assert _best_val_epoch([{"epoch": 1, "val_error": 0.3}]) == {"best_val_epoch": 1.0}


def test_val_split_trial_logs_the_validation_choice(synth):
    res = run_trial(trial(val_split=32), synth)
    f = res.final
    assert "best_test_error" not in f and f["best_val_epoch"] in (1.0, 2.0)
    at = next(h for h in res.history if h["epoch"] == f["best_val_epoch"])
    assert f["best_val_epoch_test_error"] == at["test_error"]
