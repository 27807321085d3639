"""`python -m bench.perf.checkpoint`: what a per-epoch checkpoint costs, per model.

Trains a few steps of a CIFAR-shaped trial with Lightning, then times `Trainer.save_checkpoint` (the whole fit
state, as EpochCheckpoint writes it) and reports its size, the training rate, and the checkpoint time as a
fraction of a 50,000-image epoch at that rate. Runs without Ray or MLflow.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench.data import load
from bench.train.fit import Checkpointing, run_trial
from bench.trials import Trial


def measure(model: str, n: int, batch: int, threads: int) -> dict:
    data = load("synthetic", n_train=n, n_test=batch, num_classes=10, channels=3, size=32)
    times: list[float] = []
    d = Path(tempfile.mkdtemp(prefix="bench-ckpt-"))
    last = {"t": time.perf_counter()}

    def on_saved(path: Path, rec: dict) -> None:
        times.append(time.perf_counter() - last["t"])

    t = Trial.adhoc(model, {"batch_size": batch, "epochs": 3, "test_subset": batch,
                            "schedule": {"unit": "fraction", "milestones": [0.5]}}, cpus=threads)
    res = run_trial(t, data, ckpt=Checkpointing(d, on_saved))
    # The save itself, timed alone on the trained state (the callback's time includes the epoch's evaluation).
    import lightning.pytorch as L  # noqa: F401 - loaded by run_trial already
    state = torch.load(d / "trial.ckpt", weights_only=True)
    t0 = time.perf_counter()
    for i in range(3):
        torch.save(state, d / f"again{i}.ckpt")
    save_s = (time.perf_counter() - t0) / 3
    ips = res.final["images_per_sec"]
    return {"model": model, "size_mb": (d / "trial.ckpt").stat().st_size / 1e6, "save_s": save_s,
            "img_per_s": ips, "epoch_s_50k": 50000 / ips, "overhead": save_s / (50000 / ips)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet20,resnet110")
    ap.add_argument("--n", type=int, default=1024, help="training images per epoch of the timed run")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = ap.parse_args(argv)
    print(f"device cpu, {a.threads} threads, torch {torch.__version__}")
    print(f"{'model':<12} {'ckpt MB':>8} {'save s':>8} {'img/s':>8} {'epoch s (50k)':>14} {'overhead':>9}")
    for m in a.models.split(","):
        r = measure(m, a.n, a.batch, a.threads)
        print(f"{r['model']:<12} {r['size_mb']:>8.2f} {r['save_s']:>8.3f} {r['img_per_s']:>8.0f} "
              f"{r['epoch_s_50k']:>14.0f} {r['overhead']:>9.2%}")


if __name__ == "__main__":
    main()
