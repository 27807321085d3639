"""Every Ray import lives here (Ray's API has moved before: run_experiments -> tune.run -> Tuner).

Trials run as Ray Tune trials: `Tuner` + `tune.with_resources` for per-trial CPUs/GPUs, `tune.with_parameters`
to put the dataset in the object store once, and a grid over the trial list.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import ray
from ray import tune

from bench import BenchError

REPO = Path(__file__).resolve().parent.parent.parent


class ClusterError(BenchError):
    pass


@dataclass
class Outcome:
    status: str            # FINISHED | FAILED
    error: str | None = None
    final: dict | None = None


def connect(address: str | None, num_cpus: int | None = None) -> dict[str, float]:
    """Start an embedded local Ray (this machine's CPUs and GPUs) or join a cluster. Returns its resources."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if ray.is_initialized():
        return ray.cluster_resources()
    if address and address != "auto":
        _probe(address)
    try:
        if address:
            # Ship the package to the cluster: nodes need bench's code, not this checkout.
            ray.init(address=address, log_to_driver=False, logging_level="ERROR",
                     runtime_env={"py_modules": [str(REPO / "bench")]})
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR")
    except Exception as e:  # noqa: BLE001 - ray raises ConnectionError, RuntimeError, ValueError...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ClusterError(f"cannot reach Ray cluster at {address or 'local'}: {msg}") from None
    return ray.cluster_resources()


def _probe(address: str, timeout: float = 5.0) -> None:
    """ray.init retries an unreachable GCS for minutes; a plain TCP connect answers in seconds."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"bad Ray address {address!r}; expected HOST:PORT, ray://HOST:PORT or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ClusterError(f"cannot reach Ray cluster at {address}: {e.strerror or e}") from None


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()


class _Progress(tune.Callback):
    """Forwards Tune's trial events to the driver's progress display."""

    def __init__(self, on_event: Callable[[str, str, dict], None]):
        self.on_event = on_event

    # Tune pickles its callbacks with the experiment state; the live display (locks, a terminal) stays behind.
    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self.on_event = lambda *a: None

    def on_trial_start(self, iteration, trials, trial, **info):
        self.on_event("start", _key(trial), {"name": _name(trial)})

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.on_event("result", _key(trial), result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.on_event("complete", _key(trial), trial.last_result or {})

    def on_trial_error(self, iteration, trials, trial, **info):
        self.on_event("error", _key(trial), {})


def _key(trial) -> str:
    return trial.config["cfg"].get("run_id") or trial.trial_id


def _name(trial) -> str:
    t = trial.config["cfg"]["trial"]
    return f"{t['cell']}-s{t['seed']}" + (f"#{trial.trial_id[-5:]}" if "search" in trial.config else "")


def sampler(space: dict[str, dict]) -> dict[str, Any]:
    """The suite's search space as Tune domains."""
    out = {}
    for key, p in space.items():
        if p["dist"] == "loguniform":
            out[key] = tune.loguniform(p["low"], p["high"])
        elif p["dist"] == "uniform":
            out[key] = tune.uniform(p["low"], p["high"])
        elif p["dist"] == "randint":
            out[key] = tune.randint(int(p["low"]), int(p["high"]))
        else:
            out[key] = tune.choice(p["values"])
    return out


def run_wave(trainable: Callable, configs: list[dict[str, Any]], *, resources: Callable[[dict], dict],
             data: Any, storage: Path, name: str, on_event: Callable[[str, str, dict], None],
             max_concurrent: int = 0, search: dict[str, Any] | None = None) -> dict[str, Outcome]:
    """Run one wave of independent trials; returns key -> outcome (key: the run id, or for a search the Tune
    trial id). A failing trial does not stop the rest. With `search`, every config is sampled
    `num_samples` times by Tune's random search (seeded, so a re-run draws the same samples)."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    fn = tune.with_resources(tune.with_parameters(trainable, data=data), resources=resources)
    space: dict[str, Any] = {"cfg": tune.grid_search(configs)}
    extra: dict[str, Any] = {}
    if search:
        space["search"] = sampler(search["space"])
        extra = {"num_samples": search["num_samples"], "search_alg": BasicVariantGenerator(random_state=0)}
    tuner = tune.Tuner(
        fn,
        param_space=space,
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent or None, reuse_actors=True,
                                    trial_dirname_creator=lambda t: f"{t.config['cfg']['trial']['cell']}"
                                                                    f"-s{t.config['cfg']['trial']['seed']}-{t.trial_id}",
                                    **extra),
        run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0,
                                  callbacks=[_Progress(lambda ev, rid, res: on_event(ev, rid, res))],
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )
    grid = tuner.fit()
    out: dict[str, Outcome] = {}
    for r in grid:
        rid = r.config["cfg"].get("run_id") or r.metrics.get("trial_id") or r.path
        if r.error is not None:
            out[rid] = Outcome("FAILED", _short_error(r.error))
        else:
            out[rid] = Outcome("FINISHED", final=r.metrics)
    return out


def _short_error(e: BaseException) -> str:
    """The root cause's last line: Ray wraps worker exceptions in several layers of traceback."""
    text = str(e).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ":" in ln and not ln.startswith(" "):
            return ln.strip()[:500]
    return (lines[-1] if lines else type(e).__name__)[:500]


def report(metrics: dict[str, Any]) -> None:
    tune.report(metrics)
