"""Runtime speed settings (bench/train/speed.py) and `python -m bench.perf.speed`. CPU only, except the tests
marked for CUDA, which skip without it. No compilation on CPU here (minutes): the selection logic is tested."""

import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from bench import data
from bench.data.loader import DeviceLoader
from bench.train import speed as S
from bench.train.fit import run_trial
from bench.trials import Trial

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def synth():
    return data.load("synthetic", n_train=64, n_test=40, channels=3)


def trial(**proto):
    # Three steps: channels_last convolutions round differently (~1e-6 per step); on random labels at lr 0.1 the
    # training is chaotic enough that 6 steps grow that to ~0.5% of the loss. foreach SGD is bitwise identical.
    p = {"batch_size": 16, "iterations": 3, "schedule": {"unit": "fraction", "milestones": [0.5]}, **proto}
    return Trial.adhoc("resnet20", p, cell="c", seed=3)


def test_off_is_todays_behaviour():
    s = S.choose("off", "cpu", 10**6)
    assert s == S.OFF and not s.channels_last and s.compile is None and s.optimizer_kwargs() == {}
    assert S.choose("off", torch.device("cuda"), 10**6) == S.OFF
    with pytest.raises(ValueError, match="speed must be one of"):
        S.choose("fast", "cpu", 1)


def test_cpu_selection_and_compile_threshold(monkeypatch):
    s = S.choose("auto", "cpu", 10)
    assert s.channels_last and s.compile is None and s.optimizer == S.CPU_OPTIMIZER and s.mode == "auto"
    monkeypatch.setattr(S, "CPU_COMPILE", True)
    assert S.choose("auto", "cpu", S.CPU_COMPILE_MIN_STEPS - 1).compile is None
    assert S.choose("auto", "cpu", S.CPU_COMPILE_MIN_STEPS).compile == "default"
    assert S.choose("auto", "cpu", 10**6, distributed=True).compile is None


def test_cuda_selection_without_a_gpu():
    dev = torch.device("cuda")   # a device object needs no GPU; choose() only reads its type
    long, short = S.choose("auto", dev, S.GPU_COMPILE_MIN_STEPS), S.choose("auto", dev, S.GPU_COMPILE_MIN_STEPS - 1)
    assert long.compile == "reduce-overhead" and long.static_eval and long.optimizer_kwargs() == {"fused": True}
    assert short.compile is None and not short.static_eval and short.channels_last
    assert S.choose("auto", dev, 10**6, distributed=True).compile is None


def test_tags_are_speed_keys_and_not_in_the_hash():
    t = trial()
    tags = S.choose("auto", "cpu", 10).tags()
    assert set(tags) == {"speed.mode", "speed.channels_last", "speed.compile", "speed.optimizer", "speed.reason"}
    assert "speed" not in str(t.identity())
    assert Trial.adhoc("resnet20", {**t.protocol.model_dump(), "precision": "tf32"}).config_hash != \
        Trial.adhoc("resnet20", t.protocol.model_dump()).config_hash   # precision is protocol: hashed


def test_tf32_is_fp32_for_lightning():
    assert S.apply_precision("tf32", torch.device("cpu")) == "32"
    assert S.apply_precision("bf16-mixed", torch.device("cpu")) == "bf16-mixed"


def _weights(res):
    return torch.load(res.checkpoint, weights_only=True)["state_dict"]


def test_speed_settings_match_off_within_float_tolerance(synth, tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    on = run_trial(trial(), synth, speed="auto", workdir=tmp_path / "a", save_checkpoint=True)
    off = run_trial(trial(), synth, speed="off", workdir=tmp_path / "b", save_checkpoint=True)
    assert on.speed["speed.channels_last"] == "True" and off.speed["speed.channels_last"] == "False"
    assert on.final["train_loss"] == pytest.approx(off.final["train_loss"], rel=1e-4)
    # Not test_loss: after 3 steps the BN running statistics are barely estimated, and in eval mode 20 layers
    # amplify rounding differences to ~0.3% of the loss.
    wa, wb = _weights(on), _weights(off)
    assert wa.keys() == wb.keys()   # in-place channels_last/compile: checkpoints keep their keys
    # All weights together: early convs differ by ~0.4% each (see the float64 test below: fp32 itself is ~0.2% off
    # there), the large late layers far less.
    flat = lambda w: torch.cat([v.double().flatten() for k, v in w.items() if "num_batches" not in k])  # noqa: E731
    assert ((flat(wa) - flat(wb)).norm() / flat(wb).norm()).item() < 1e-3


def test_channels_last_gradients_are_within_fp32_error_of_float64():
    """The speed settings' rounding is of the same size as plain fp32's own: compare both with float64."""
    import copy

    import torch.nn.functional as F
    from bench import models

    torch.manual_seed(0)
    m = models.create("resnet20", num_classes=10, in_channels=3)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))

    def grads(mm, xx):
        F.cross_entropy(mm(xx), y).backward()
        return torch.cat([p.grad.double().flatten() for p in mm.parameters()])

    ref = grads(copy.deepcopy(m).double(), x.double())
    fp32 = grads(copy.deepcopy(m), x)
    cl = copy.deepcopy(m)
    S.prepare_model(cl, S.choose("auto", "cpu", 10))
    fast = grads(cl, x.contiguous(memory_format=torch.channels_last))
    err32, err_fast = ((fp32 - ref).norm() / ref.norm()).item(), ((fast - ref).norm() / ref.norm()).item()
    assert err_fast < max(4 * err32, 1e-5), (err32, err_fast)


def test_padded_eval_batches_score_the_same(synth, monkeypatch):
    base = run_trial(trial(), synth, speed="off")
    # What CUDA graphs need, without compiling: every eval batch padded to one shape (40 test images, batch 500).
    monkeypatch.setattr(S.Speed, "static_eval", property(lambda self: True))
    padded = run_trial(trial(), synth, speed="off")
    for k in ("test_loss", "test_error", "train_loss"):
        assert padded.final[k] == pytest.approx(base.final[k], rel=1e-6), k


def test_pad_last_loader_shapes():
    x = torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8)
    y = torch.arange(10)
    ld = DeviceLoader(x, y, batch_size=4, mean=[0.5], std=[0.5], pad_last=True, channels_last=True)
    got = list(ld)
    assert [b[0].shape[0] for b in got] == [4, 4, 4]
    assert got[-1][1].tolist() == [8, 9, -100, -100]
    assert got[-1][0].is_contiguous(memory_format=torch.channels_last)


def test_compile_cache_dir_is_shared_and_overridable(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TORCHINDUCTOR_FX_GRAPH_CACHE", raising=False)
    monkeypatch.delenv("TORCHINDUCTOR_AUTOGRAD_CACHE", raising=False)
    assert S.inductor_cache_dir(tmp_path) == tmp_path / "inductor"
    assert S.enable_compile_cache(tmp_path) == tmp_path / "inductor"
    import os
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")
    assert os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] == "1"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert S.inductor_cache_dir() == tmp_path / "mine"


def test_cli_speed_option():
    from bench.cli import parser

    assert parser().parse_args(["run", "quickstart"]).speed == "auto"
    assert parser().parse_args(["run", "quickstart", "--speed", "off"]).speed == "off"
    import argparse

    from bench.perf.speed import add_arguments

    ap = argparse.ArgumentParser()
    add_arguments(ap)
    a = ap.parse_args(["--models", "resnet20", "--device", "cpu", "--packing", "1,2"])
    assert a.packing == "1,2" and a.models == "resnet20"


def test_bench_speed_runs_without_ray_and_mlflow(tmp_path):
    code = ("import sys; sys.modules['ray'] = None; sys.modules['mlflow'] = None\n"
            "from bench.perf.speed import main\n"
            f"main(['--models', 'resnet20', '--device', 'cpu', '--steps', '1', '--batch', '8', '--threads', '1', "
            f"'--out', {str(tmp_path)!r}])\n"
            f"main(['--models', 'resnet20', '--device', 'cpu', '--steps', '1', '--batch', '4', '--threads', '1', "
            f"'--packing', '2', '--out', {str(tmp_path)!r}])\n"
            "assert 'ray' not in [m.split('.')[0] for m in sys.modules if sys.modules[m] is not None]\n"
            "assert 'mlflow' not in [m.split('.')[0] for m in sys.modules if sys.modules[m] is not None]\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "harness auto" in r.stdout and "packing 2" in r.stdout
    import json
    js = sorted(tmp_path.glob("speed-cpu-2*.json"))
    rows = json.loads(js[0].read_text())["rows"]
    assert {(r["side"], r["variant"]) for r in rows} == {("bare", "auto"), ("harness", "auto"), ("harness", "off")}
    assert all(r["ratio_to_bare"] > 0 for r in rows)
    assert len(list(tmp_path.glob("*.md"))) == 2


@cuda
def test_cuda_graphs_trial_matches_off(synth):
    dev = torch.device("cuda")
    s = replace(S.choose("auto", dev, S.GPU_COMPILE_MIN_STEPS), reason="test")
    t = Trial.adhoc("resnet20", trial().protocol.model_dump(), cell="c", seed=3, gpus=1)
    on = run_trial(t, synth, speed=s)
    off = run_trial(t, synth, speed="off")
    assert on.speed["speed.compile"] == "reduce-overhead"
    assert on.final["train_loss"] == pytest.approx(off.final["train_loss"], rel=1e-3)


@cuda
def test_tf32_on_cuda_enables_tf32():
    S.apply_precision("tf32", torch.device("cuda"))
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    S.apply_precision("32", torch.device("cuda"))
    assert not torch.backends.cuda.matmul.allow_tf32


def test_bf16_falls_back_to_fp32_on_a_cpu_without_it_and_says_so(monkeypatch):
    import pandas as pd

    from bench.report.tables import summarize_runs
    from bench.train import speed as sp

    cpu = torch.device("cpu")
    monkeypatch.setattr(sp, "cpu_bf16", lambda: False)
    assert sp.apply_precision("bf16-mixed", cpu) == "32"
    assert sp.precision_used("bf16-mixed", cpu) == "32"
    assert sp.precision_used("tf32", cpu) == "32"
    monkeypatch.setattr(sp, "cpu_bf16", lambda: True)
    assert sp.apply_precision("bf16-mixed", cpu) == "bf16-mixed"
    assert sp.precision_used("bf16-mixed", cpu) == "bf16-mixed"
    # The report's header names both: what the protocol asked and what a run computed in.
    runs = pd.DataFrame({"params.protocol.precision": ["bf16-mixed", "bf16-mixed", "32"],
                         "tags.bench.precision.used": ["bf16-mixed", "32", None]})
    assert summarize_runs(runs)["precision"] == [
        "bf16-mixed ×1", "bf16-mixed, computed in 32 (no bfloat16 on this CPU) ×1", "32 ×1"]
