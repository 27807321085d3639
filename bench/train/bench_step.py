"""Training throughput of the harness against a bare PyTorch loop, measured in the same process.

    python -m bench.train.bench_step --model resnet20 --n 2560 --batch 128            # CPU, a minute
    python -m bench.train.bench_step --model resnet110 --n 50000 --device cuda          # a GPU box (no Ray/MLflow needed)

Both sides train the same net on the same uint8 data held on the device, with the same per-image crop/flip, for
two epochs; only the second epoch is timed (the first pays allocator and cuDNN warm-up). The bare loop runs
before and after the harness, and the ratio uses their mean. The harness side is
`run_trial` itself (Lightning Trainer, epoch sums on the device, lr schedule), so the ratio is the whole cost of
the harness over the bare loop.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from bench import models
from bench.data import load
from bench.data.loader import DeviceLoader
from bench.train.fit import run_trial
from bench.trials import Trial


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def bare_loop(data, model_name: str, batch: int, dev: torch.device, precision: str) -> float:
    torch.manual_seed(0)
    model = models.create(model_name, num_classes=data.num_classes, in_channels=data.in_channels).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    loader = DeviceLoader(data.train_x, data.train_y, batch_size=batch, mean=data.mean, std=data.std, device=dev,
                          train=True, crop_pad=4, flip=True, drop_last=True, seed=0)
    amp = precision == "bf16-mixed"
    rate = 0.0
    for epoch in range(2):
        _sync(dev)
        t0, n = time.perf_counter(), 0
        for x, y in loader:
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += y.numel()
        _sync(dev)
        rate = n / (time.perf_counter() - t0)
    return rate


def harness(data, model_name: str, batch: int, dev: torch.device, precision: str) -> float:
    trial = Trial.adhoc(model_name, {"batch_size": batch, "epochs": 2, "precision": precision, "test_subset": batch,
                                     "schedule": {"kind": "multistep", "unit": "fraction", "milestones": [0.5, 0.75]}},
                        cell="bench", cpus=torch.get_num_threads(), gpus=1 if dev.type == "cuda" else 0)
    res = run_trial(trial, data)
    return res.history[-1]["images_per_sec"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--n", type=int, default=2560, help="training images (synthetic, CIFAR-shaped)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default="32", choices=["32", "bf16-mixed"])
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.device == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = a.precision == "32"
    dev = torch.device(a.device)
    data = load("synthetic", n_train=a.n, n_test=a.batch, num_classes=10, channels=3, size=32)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"{a.model}, batch {a.batch}, {a.n} images/epoch, precision {a.precision}, on {name}, "
          f"torch {torch.__version__}")
    # Bare, harness, bare again: the process warms up as it goes, so the harness is compared with the mean of a
    # bare run before it and one after it.
    b1 = bare_loop(data, a.model, a.batch, dev, a.precision)
    print(f"bare loop : {b1:10,.0f} img/s")
    ours = harness(data, a.model, a.batch, dev, a.precision)
    print(f"harness   : {ours:10,.0f} img/s")
    b2 = bare_loop(data, a.model, a.batch, dev, a.precision)
    print(f"bare loop : {b2:10,.0f} img/s")
    print(f"ratio harness/bare = {ours / ((b1 + b2) / 2):.3f}")


if __name__ == "__main__":
    main()
