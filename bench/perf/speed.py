"""`python -m bench.perf.speed`: training throughput of the harness against the project's own bare loop, in one process.

    python -m bench.perf.speed --models resnet20 --device cpu --steps 20                        # CPU, a few minutes
    python -m bench.perf.speed --models resnet20,resnet110,preresnet164_e --device cuda          # a GPU box (make gpu-speed)
    python -m bench.perf.speed --models resnet20 --packing 1,2,4,8 --device cuda                # N trials at once on one device

For each model, in one process:
  (a) bare: the project's own bare PyTorch loop doing the work of the reference anchor loop (the same net, batch
      128, the protocol's dtype, per-image random crop and flip on the device from uint8 data held there, SGD with
      momentum), with the same speed settings as (b);
  (b) harness, auto: `run_trial` (Lightning Trainer, epoch sums on the device, lr schedule) with the settings
      bench/train/speed.py chooses for a full-length trial on this device;
  (c) harness, off: `run_trial` with speed "off" (NCHW, eager, default optimizer: the behaviour before).
Each side trains two epochs of --steps steps; the first pays warm-up and compilation (reported as first_epoch_s),
the second is the steady rate. "trial" rates count both epochs, compilation included. The bare loop runs before
and after the harness (the process warms up as it goes); ratios use the mean of the two.

Needs only torch, lightning, pydantic and pyyaml: no Ray, no MLflow (tests/test_speed.py checks it).
Writes speed-<device>-<time>.json and .md into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

# torch is imported inside the functions: `bench --help` and the other commands import this module's parser.

# A full-length trial (He et al. 2015's CIFAR protocol: 64k iterations) decides what "auto" means here.
FULL_TRIAL_STEPS = 64_000


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def variant(name: str, dev: torch.device):
    """Named speed settings: off, auto (a full trial's choice), eager (auto without compile), compile (auto with
    compile forced: inductor on CPU, CUDA graphs on GPU), foreach/fused/loop (auto with that optimizer)."""
    from bench.train.speed import OFF, choose

    auto = choose("auto", dev, FULL_TRIAL_STEPS)
    if name == "off":
        return OFF
    if name == "auto":
        return auto
    if name == "eager":
        return replace(auto, compile=None, reason="auto without compile")
    if name == "compile":
        return replace(auto, compile="reduce-overhead" if dev.type == "cuda" else "default", reason="compile forced")
    if name in ("foreach", "fused", "loop"):
        return replace(auto, optimizer=name, reason=f"auto with the {name} optimizer")
    raise SystemExit(f"bench.perf.speed: unknown variant {name!r}")


def _data(steps: int, batch: int, channels: int):
    from bench.data import load

    return load("synthetic", n_train=steps * batch, n_test=batch, num_classes=10, channels=channels, size=32)


def _apply_precision(precision: str, dev: torch.device) -> None:
    from bench.train.speed import apply_precision

    apply_precision(precision, dev)


def bare_loop(model_name: str, data, speed, *, batch: int, dev: torch.device, precision: str) -> dict[str, float]:
    """Two epochs of a plain loop: uint8 data on the device, per-image crop+flip there, SGD with momentum."""
    import torch
    import torch.nn.functional as F

    from bench import models
    from bench.data.loader import DeviceLoader
    from bench.train.speed import prepare_model

    torch.manual_seed(0)
    _apply_precision(precision, dev)
    model = models.create(model_name, num_classes=data.num_classes, in_channels=data.in_channels).to(dev)
    prepare_model(model, speed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, **speed.optimizer_kwargs())
    loader = DeviceLoader(data.train_x, data.train_y, batch_size=batch, mean=data.mean, std=data.std, device=dev,
                          train=True, crop_pad=4, flip=True, drop_last=True, seed=0,
                          channels_last=speed.channels_last)
    amp = precision in ("bf16-mixed", "16-mixed")
    amp_dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float16
    times, n = [], 0
    for _epoch in range(2):
        _sync(dev)
        t0, n = time.perf_counter(), 0
        for x, y in loader:
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += y.numel()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    return {"img_s": n / times[1], "trial_img_s": 2 * n / sum(times), "first_epoch_s": times[0]}


def harness(model_name: str, data, speed, *, batch: int, dev: torch.device, precision: str,
            threads: int) -> dict[str, float]:
    """run_trial itself, two epochs, with the given settings."""
    from bench.train.fit import run_trial
    from bench.trials import Trial

    trial = Trial.adhoc(model_name, {"batch_size": batch, "epochs": 2, "precision": precision, "test_subset": batch,
                                     "schedule": {"kind": "multistep", "unit": "fraction", "milestones": [0.5]}},
                        cell="speed", cpus=threads, gpus=1 if dev.type == "cuda" else 0)
    res = run_trial(trial, data, speed=speed)
    h = res.history
    images = h[-1]["step"] * batch
    first = h[0]["step"] * batch / h[0]["images_per_sec"]
    return {"img_s": h[-1]["images_per_sec"], "trial_img_s": images / res.final["train_time_s"],
            "first_epoch_s": first}


def device_label(dev: torch.device) -> str:
    from bench.train.fit import device_name

    return device_name(dev)


def measure_model(model_name: str, *, dev: torch.device, steps: int, batch: int, precision: str, threads: int,
                  variants: list[str], channels: int, log=print) -> list[dict[str, Any]]:
    data = _data(steps, batch, channels)
    rows: list[dict[str, Any]] = []
    main = variant(variants[0], dev)

    def row(side: str, vname: str, spd, r: dict[str, float]) -> dict[str, Any]:
        out = {"model": model_name, "side": side, "variant": vname, "channels_last": spd.channels_last,
               "compile": spd.compile, "optimizer": spd.optimizer, **{k: round(v, 2) for k, v in r.items()}}
        log(f"  {model_name:<16} {side:<8} {vname:<8} {r['img_s']:>10,.0f} img/s steady, "
            f"{r['trial_img_s']:>10,.0f} over the trial, first epoch {r['first_epoch_s']:.1f} s", flush=True)
        rows.append(out)
        return out

    b1 = row("bare", variants[0], main, bare_loop(model_name, data, main, batch=batch, dev=dev, precision=precision))
    for v in variants:
        spd = variant(v, dev)
        row("harness", v, spd, harness(model_name, data, spd, batch=batch, dev=dev, precision=precision,
                                       threads=threads))
    b2 = row("bare", variants[0], main, bare_loop(model_name, data, main, batch=batch, dev=dev, precision=precision))
    bare = (b1["img_s"] + b2["img_s"]) / 2
    bare_trial = (b1["trial_img_s"] + b2["trial_img_s"]) / 2
    for r in rows:
        r["ratio_to_bare"] = round(r["img_s"] / bare, 3)
        r["trial_ratio_to_bare"] = round(r["trial_img_s"] / bare_trial, 3)
    hs = {r["variant"]: r for r in rows if r["side"] == "harness"}
    if "off" in hs:
        for r in hs.values():
            r["speedup_vs_off"] = round(r["img_s"] / hs["off"]["img_s"], 3)
            r["trial_speedup_vs_off"] = round(r["trial_img_s"] / hs["off"]["trial_img_s"], 3)
    return rows


# --- packing: N trials at once on one device, in processes (no Ray) -------------------------------------------

def _pack_child(model_name: str, steps: int, batch: int, device: str, precision: str, threads: int, channels: int,
                variant_name: str, barrier, queue) -> None:
    import torch

    dev = torch.device(device)
    try:
        data = _data(steps, batch, channels)
        spd = variant(variant_name, dev)
        barrier.wait(timeout=600)
        t0 = time.perf_counter()
        r = harness(model_name, data, spd, batch=batch, dev=dev, precision=precision, threads=threads)
        queue.put({**r, "t0": t0, "t1": time.perf_counter()})
    except BaseException as e:  # report, never hang the parent
        queue.put({"error": f"{type(e).__name__}: {e}"})


def packing(model_name: str, counts: list[int], *, dev: torch.device, steps: int, batch: int, precision: str,
            threads: int, channels: int, variant_name: str = "auto", log=print) -> list[dict[str, Any]]:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    rows = []
    for n in counts:
        per = max(1, threads // n) if dev.type == "cpu" else threads
        barrier, queue = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_pack_child, args=(model_name, steps, batch, str(dev), precision, per, channels,
                                                         variant_name, barrier, queue)) for _ in range(n)]
        for p in procs:
            p.start()
        res = [queue.get(timeout=1800) for _ in procs]
        for p in procs:
            p.join()
        errs = [r["error"] for r in res if "error" in r]
        if errs:
            raise SystemExit(f"bench.perf.speed --packing {n}: {errs[0]}")
        wall = max(r["t1"] for r in res) - min(r["t0"] for r in res)
        row = {"model": model_name, "side": "packing", "variant": variant_name, "processes": n, "threads_each": per,
               "sum_steady_img_s": round(sum(r["img_s"] for r in res), 1),
               "per_trial_img_s": [round(r["img_s"], 1) for r in res],
               "wall_img_s": round(n * 2 * steps * batch / wall, 1), "wall_s": round(wall, 1)}
        log(f"  packing {n}: {row['sum_steady_img_s']:>10,.0f} img/s summed steady, "
            f"{row['wall_img_s']:>10,.0f} img/s over the wall ({per} threads each)", flush=True)
        rows.append(row)
    return rows


# --- report ---------------------------------------------------------------------------------------------------

def markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [f"# bench.perf.speed: {meta['device']}", "",
             f"torch {meta['torch']}, lightning {meta['lightning']}, {meta['threads']} threads, batch {meta['batch']}, "
             f"precision {meta['precision']}, {meta['steps']} steps per epoch x 2 epochs, input "
             f"{meta['channels']}x32x32, {meta['time']}. {meta.get('note', '')}", "",
             "| model | side | settings | steady img/s | ratio to bare | trial img/s (compile incl.) | trial ratio "
             "| first epoch s | speedup vs off (steady / trial) |",
             "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if r["side"] == "packing":
            continue
        sett = f"{r['variant']}: {'CL' if r['channels_last'] else 'NCHW'}, {r['compile'] or 'eager'}, {r['optimizer']}"
        sp = f"{r['speedup_vs_off']:.2f} / {r['trial_speedup_vs_off']:.2f}" if "speedup_vs_off" in r else ""
        lines.append(f"| {r['model']} | {r['side']} | {sett} | {r['img_s']:,.0f} | {r['ratio_to_bare']:.3f} | "
                     f"{r['trial_img_s']:,.0f} | {r['trial_ratio_to_bare']:.3f} | {r['first_epoch_s']:.1f} | {sp} |")
    pk = [r for r in rows if r["side"] == "packing"]
    if pk:
        lines += ["", "| model | settings | processes | threads each | summed steady img/s | img/s over the wall |",
                  "|---|---|---:|---:|---:|---:|"]
        lines += [f"| {r['model']} | {r['variant']} | {r['processes']} | {r['threads_each']} | {r['sum_steady_img_s']:,.0f} | "
                  f"{r['wall_img_s']:,.0f} |" for r in pk]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.perf.speed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    return run(ap.parse_args(argv))


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--models", default="resnet20,resnet110,preresnet164_e")
    ap.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when available")
    ap.add_argument("--steps", type=int, default=100, help="steps per epoch (two epochs per measurement)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--precision", default=None, choices=["32", "tf32", "bf16-mixed"],
                    help="default: bf16-mixed on cuda, 32 on cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--channels", type=int, default=3, help="input channels (3: CIFAR; 1: Fashion-MNIST padded)")
    ap.add_argument("--variants", default="auto,off",
                    help="harness settings to measure; the first is also the bare loop's (off, auto, eager, "
                         "compile, foreach, fused, loop)")
    ap.add_argument("--packing", default=None, help="e.g. 1,2,4,8: N trials of the first model at once")
    ap.add_argument("--out", default="reports/perf")
    ap.add_argument("--note", default="", help="a line for the report (e.g. 'machine shared with other jobs')")


def run(a: argparse.Namespace) -> int:
    import torch

    from bench.train.fit import quiet_lightning

    quiet_lightning()
    dev = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("bench.perf.speed: --device cuda but no CUDA device here")
        torch.backends.cudnn.benchmark = True
    threads = a.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    precision = a.precision or ("bf16-mixed" if dev.type == "cuda" else "32")
    import lightning

    meta = {"device": device_label(dev), "torch": torch.__version__, "lightning": lightning.__version__,
            "python": platform.python_version(), "host": platform.node(), "threads": threads, "batch": a.batch,
            "steps": a.steps, "precision": precision, "channels": a.channels, "note": a.note,
            "inductor_cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR", ""),
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(f"bench.perf.speed on {meta['device']}, torch {meta['torch']}, {threads} threads, precision {precision}",
          flush=True)
    rows: list[dict[str, Any]] = []
    models_ = [m for m in a.models.split(",") if m]
    variants = [v for v in a.variants.split(",") if v]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"speed-{dev.type}-{'packing-' if a.packing else ''}{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"

    def save() -> None:   # after every model: a run cut short by a time limit keeps what it measured
        (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        (out / f"{stem}.md").write_text(markdown(meta, rows))

    if a.packing:
        rows += packing(models_[0], [int(n) for n in a.packing.split(",")], dev=dev, steps=a.steps, batch=a.batch,
                        precision=precision, threads=threads, channels=a.channels, variant_name=variants[0])
        save()
    else:
        for m in models_:
            rows += measure_model(m, dev=dev, steps=a.steps, batch=a.batch, precision=precision, threads=threads,
                                  variants=variants, channels=a.channels)
            save()
        for r in rows:
            if r["side"] == "harness":
                extra = f", {r['speedup_vs_off']:.2f}x off" if "speedup_vs_off" in r else ""
                print(f"{r['model']:<16} harness {r['variant']:<8} / bare = {r['ratio_to_bare']:.3f} steady, "
                      f"{r['trial_ratio_to_bare']:.3f} over the trial{extra}")
    print(f"written {out / stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
