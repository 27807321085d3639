"""Runtime speed settings of a trial: how the protocol's mathematics is executed, never what it is.

`choose(mode, device, steps)` picks, per device, the memory format (channels_last), torch.compile (off, inductor
default mode, or "reduce-overhead" = CUDA graphs) and the optimizer implementation (for-loop, foreach, fused).
None of them changes the numbers a trial is meant to compute beyond float rounding (tests/test_speed.py checks
a few steps against speed "off"), so they are recorded as MLflow tags (`speed.*`) and stay out of the config hash.
Precision is not here: it is the protocol's (`Protocol.precision`, which is hashed).

`mode="off"` is the behaviour before these settings existed: NCHW, eager, torch's default optimizer
implementation (the per-parameter for-loop on CPU).

Defaults, and the figures that justify them:

CPU (the issue's figures, from this project's 2-core machine, torch 2.13.0+cpu, ResNet-20/56, batch 128, 1x32x32 and 3x32x32;
the machine was shared with other jobs, medians of a few repetitions; full figures in the speed report):
  * channels_last: ResNet-20 NCHW eager 185 img/s at 1 thread / 257 at 2; channels_last 216 / 431 (1.17x / 1.68x).
  * compile: inductor (default mode) 234 img/s at 1 thread (1.27x NCHW, 1.08x channels_last) after ~56 s of
    compilation with a cold cache. Per step of batch 128 it saves ~0.046 s over channels_last eager, so a cold
    compile pays back after ~1,200 steps; see CPU_COMPILE_MIN_STEPS for the threshold used.
  * optimizer: see CPU_OPTIMIZER below.
  Measured by `python -m bench.perf.speed` on this project's 2-core CPU (AMD EPYC per /proc/cpuinfo, 2 threads, 1x32x32,
  batch 128, no other jobs running; reports/perf/speed-cpu-20261128-050508-19166.md): harness auto vs harness off
  (NCHW eager, loop SGD) ResNet-20 997 vs 783 img/s (1.27x), ResNet-56 375 vs 283 (1.32x); harness auto / bare
  loop with the same settings 1.055 (ResNet-20) and 0.998 (ResNet-56). Compile (ResNet-20, inductor, machine
  shared with other jobs): cold cache, first epoch of 10 steps 170 s; a second fresh process with the shared
  cache 61.5 s; the compiled steady rates were all taken under contention and show no gain over eager that
  rises above the noise (reports/perf/log-cpu-compile-two-processes-0419.txt).

CUDA (not measurable here; anchors.md, one H100, torch 2.11, batch 128, data and crop/flip on the GPU):
  * channels_last: the anchor loop itself trains channels_last.
  * compile "reduce-overhead" (CUDA graphs): eager is launch-bound. ResNet-20 18,554 img/s tf32 eager ->
    46,491 bf16 graphs; ResNet-110 4,721 tf32 eager -> 10,659 tf32 graphs (2.26x) / 14,694 bf16 graphs, after
    72 s of compilation (PreResNet-164: 107 s). ResNet-110 saves 128/4,721 - 128/10,659 = 0.0151 s per step in
    tf32, so a cold compile pays back after ~4,800 steps (~12 CIFAR epochs); with the node's shared inductor
    cache warm (the second trial of a model) it pays back much sooner. Threshold: GPU_COMPILE_MIN_STEPS.
    Plain inductor ("default" mode) gained little (ResNet-110 bf16 3,741 vs 3,140 eager): not used on GPU.
  * optimizer: fused SGD (one kernel for all parameters) on CUDA: the per-parameter loop is ~3 launches per
    tensor, and a launch-bound step is exactly where that shows. Not in anchors.md: pending a GPU run of
    `python -m bench.perf.speed` (make gpu-speed), which records it.

Harness overhead per step (module.py): no host syncs; the epoch sums stay on the device and are read once per
epoch, and a step's image count is a device fill. The lr schedule is LambdaLR, which calls a Python function
(schedule.lr_at) once per step and writes a Python float into the optimizer: no device work and no sync, cheap
on CPU (microseconds against a ~0.3 s step); with CUDA graphs the optimizer step runs outside the graph, so the
float lr stays valid. Left as is.

CUDA graphs need static shapes: the train loader already drops the last partial batch (drop_last whenever the
split holds at least one batch), and with compile on, evaluation pads its last batch to the full batch with
ignored labels (DeviceLoader pad_last; Classifier counts only real labels), so one graph serves every eval batch.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

MODES = ("off", "auto")

# CPU: compile only when the trial is long enough to pay the compilation back. From the figures above: ~56 s
# cold compile / ~0.046 s saved per step ~ 1,200 steps; rounded up, because the saving over channels_last eager is
# small (1.08x at 1 thread) and noisy. Measured at 2 threads by `python -m bench.perf.speed` (reports/perf/): see CPU_COMPILE.
CPU_COMPILE_MIN_STEPS = 2000
# Whether compile is used on CPU at all: off. The figure is 1.08x over channels_last at 1 thread after ~56 s
# of compilation; here a cold compile took 170 s (contended) and its gain did not rise above the noise.
CPU_COMPILE = False
# GPU: ~4,800 steps pay back a cold ResNet-110 compile in tf32 (see above).
GPU_COMPILE_MIN_STEPS = 5000
# Optimizer implementation on CPU ("loop" = torch's default on CPU, "foreach", "fused"). foreach gives bitwise the
# same losses as the loop (tests); fused measured 0.97x of foreach in one contended run (22 vs 30 img/s, noise).
# The optimizer step is a small part of a CPU step either way.
CPU_OPTIMIZER = "foreach"


@dataclass(frozen=True)
class Speed:
    mode: str = "off"                 # what was asked: "off" or "auto"
    channels_last: bool = False
    compile: str | None = None        # None, "default" (inductor) or "reduce-overhead" (CUDA graphs)
    optimizer: str = "default"        # "default" (torch's choice), "foreach" or "fused"
    reason: str = ""                  # one line: why these settings

    @property
    def static_eval(self) -> bool:
        """Pad the last evaluation batch so every eval batch has one shape (CUDA graphs stay valid)."""
        return self.compile is not None

    def tags(self) -> dict[str, str]:
        """MLflow run tags (`speed.*`); they describe the run, they are not part of its identity."""
        return {f"speed.{k}": str(v) for k, v in asdict(self).items()}

    def optimizer_kwargs(self) -> dict[str, bool]:
        """Extra keyword arguments for torch.optim.SGD/RMSprop."""
        if self.optimizer == "fused":
            return {"fused": True}
        if self.optimizer == "foreach":
            return {"foreach": True}
        if self.optimizer == "loop":
            return {"foreach": False}
        return {}


OFF = Speed()


def choose(mode: str, device: torch.device | str, steps: int, *, distributed: bool = False,
           optimizer: str = "sgd") -> Speed:
    """The settings for a trial of `steps` optimizer steps on `device` (mode "off" or "auto")."""
    if mode not in MODES:
        raise ValueError(f"speed must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "off":
        return OFF
    if torch.device(device).type == "cuda":
        # fused RMSprop exists on CUDA too; fused needs floating-point params on one device (ours are).
        comp, why = _compile_choice(True, "reduce-overhead", "CUDA graphs", GPU_COMPILE_MIN_STEPS, steps, distributed)
        return Speed("auto", True, comp, "fused", "cuda: channels_last, fused optimizer; " + why)
    comp, why = _compile_choice(CPU_COMPILE, "default", "inductor", CPU_COMPILE_MIN_STEPS, steps, distributed)
    return Speed("auto", True, comp, CPU_OPTIMIZER, f"cpu: channels_last, {CPU_OPTIMIZER} optimizer; " + why)


def _compile_choice(enabled: bool, mode: str, name: str, threshold: int, steps: int,
                    distributed: bool) -> tuple[str | None, str]:
    """(compile mode or None, why): compile only where it is on for the device and pays back."""
    if not enabled:
        return None, "eager (compile's gain over channels_last not shown on this device)"
    if distributed:
        return None, "no compile under data parallelism"
    if steps >= threshold:
        return mode, f"{name} ({steps} steps >= {threshold})"
    return None, f"eager ({steps} steps < {threshold}: compile would not pay back)"


def inductor_cache_dir(state_dir: str | Path | None = None) -> Path:
    """One inductor cache per node (and user), shared by every trial: 10 trials of a model compile about once.
    TORCHINDUCTOR_CACHE_DIR wins when set; otherwise ~/.cache/bench/inductor (or STATE_DIR/inductor)."""
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    base = Path(state_dir) if state_dir else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bench"
    return base / "inductor"


def enable_compile_cache(state_dir: str | Path | None = None) -> Path:
    """Point inductor's on-disk caches (FX graphs, AOTAutograd) at the node's shared directory. Call before the
    first torch.compile of the process."""
    d = inductor_cache_dir(state_dir)
    d.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(d)
    os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] = "1"
    os.environ["TORCHINDUCTOR_AUTOGRAD_CACHE"] = "1"
    try:
        import torch._inductor.config as ic

        ic.fx_graph_cache = True
        if hasattr(ic, "autograd_cache"):
            ic.autograd_cache = True
        import torch._functorch.config as fc

        if hasattr(fc, "enable_autograd_cache"):
            fc.enable_autograd_cache = True
    except ImportError:   # a torch without inductor: compile will fail loudly later, the cache is moot
        pass
    return d


def cpu_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX). Elsewhere oneDNN emulates it, slower
    than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def apply_precision(precision: str, device: torch.device) -> str:
    """The protocol's precision on `device`; returns Lightning's precision string. "tf32" is fp32 storage with
    TF32 matmuls and convolutions on CUDA (and plain fp32 elsewhere). "bf16-mixed" on a CPU without native
    bfloat16 falls back to fp32: the run's `precision.used` tag says so, and the report prints it."""
    if device.type == "cpu" and precision == "bf16-mixed" and not cpu_bf16():
        return "32"
    if device.type == "cuda":
        tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        # torch's default for cuDNN convolutions is to allow TF32; "tf32" asks for it explicitly.
        if tf32:
            torch.backends.cudnn.allow_tf32 = True
    return "32" if precision == "tf32" else precision


def precision_used(precision: str, device: torch.device) -> str:
    """What a trial computed in: the protocol's precision, or "32" where apply_precision fell back."""
    if precision == "tf32":
        return "tf32" if device.type == "cuda" else "32"
    return "32" if device.type == "cpu" and precision == "bf16-mixed" and not cpu_bf16() else precision


def prepare_model(model: torch.nn.Module, speed: Speed, *, state_dir: str | Path | None = None) -> torch.nn.Module:
    """Memory format and compilation, in place (nn.Module.compile keeps the state_dict keys unchanged)."""
    if speed.channels_last:
        model.to(memory_format=torch.channels_last)
    if speed.compile is not None:
        enable_compile_cache(state_dir)
        model.compile(**({} if speed.compile == "default" else {"mode": speed.compile}))
    return model


def setup(mode: "str | Speed", device: torch.device, steps: int, module, train_loader, eval_loaders: dict, *,
          distributed: bool = False, state_dir: str | Path | None = None) -> Speed:
    """Choose the settings for a trial ("off", "auto", or explicit Speed settings, as `python -m bench.perf.speed` passes) and
    apply them to its module and loaders (the one call run_trial makes)."""
    from bench.data.loader import DeviceLoader

    speed = mode if isinstance(mode, Speed) else choose(mode, device, steps, distributed=distributed)
    module.optim_kwargs = speed.optimizer_kwargs()
    for ld in (train_loader, *eval_loaders.values()):
        if isinstance(ld, DeviceLoader):
            ld.channels_last = speed.channels_last
            ld.pad_last = ld.pad_last or (speed.static_eval and not ld.train)
    prepare_model(module.model, speed, state_dir=state_dir)
    return speed
