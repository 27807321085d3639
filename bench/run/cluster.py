"""What a Ray cluster could ever run, and where a run's tracking store must live. No Ray imports (see ray_exec).

An autoscaling cluster starts small (cluster.yaml: a 0-CPU head, GPU node types with min_workers 0), so its
current resources say nothing about what it can run: a trial is feasible when each of its bundles (the trial's
slot; a data-parallel trial's coordinator and each worker) fits on one node of some node type, and all of them
together fit in what the node types can add up to. Only what no node type could ever hold is refused.
"""

from __future__ import annotations

import math
from typing import Any

from bench import BenchError
from bench.spec import COORDINATOR_CPU, Resources


class PlacementError(BenchError):
    exit_code = 2


NodeType = dict[str, Any]    # {"name": str, "resources": {"CPU": 48, "GPU": 4}, "max": 4}; max -1 = unbounded


def node_types_from_config(cfg: dict[str, Any]) -> list[NodeType]:
    """Node types of a cluster-launcher config (cluster.yaml / the head's ~/ray_bootstrap_config.yaml)."""
    out = []
    head = cfg.get("head_node_type")
    for name, t in (cfg.get("available_node_types") or {}).items():
        res = {k: float(v) for k, v in (t.get("resources") or {}).items()}
        n = int(t.get("max_workers", 0) or 0)
        if name == head:
            n = max(n, 1)    # the head exists even when no more of its type may be added
        out.append({"name": name, "resources": res, "max": n})
    return out


def bundles(r: Resources) -> list[dict[str, float]]:
    """What a trial holds at once, as the pieces Ray places on one node each."""
    one = {"CPU": r.cpus, "GPU": r.gpus}
    return [{"CPU": COORDINATOR_CPU, "GPU": 0.0}] + [one] * r.workers if r.parallel else [one]


def capacity(node_types: list[NodeType]) -> dict[str, float]:
    """The most of each resource the node types can provide together."""
    out: dict[str, float] = {}
    for t in node_types:
        for k, v in t["resources"].items():
            out[k] = out.get(k, 0.0) + (math.inf if t["max"] < 0 else v * t["max"])
    return out


def infeasible(need: list[dict[str, float]], node_types: list[NodeType]) -> str | None:
    """Why these bundles could never be placed on any scale-up of the node types, or None if they could."""
    usable = [t for t in node_types if t["max"] != 0]
    for b in need:
        if not any(all(t["resources"].get(k, 0.0) + 1e-9 >= v for k, v in b.items() if v > 0) for t in usable):
            want = ", ".join(f"{v:g} {k}" for k, v in b.items() if v > 0)
            have = "; ".join(f"{t['name']}: " + (", ".join(f"{v:g} {k}" for k, v in t["resources"].items()) or "-")
                             for t in usable) or "none"
            return f"no node type holds {want} on one node (node types: {have})"
    cap = capacity(usable)
    for k in {k for b in need for k in b}:
        total = sum(b.get(k, 0.0) for b in need)
        if total > cap.get(k, 0.0) + 1e-9:
            return f"it needs {total:g} {k} at once and the node types add up to {cap.get(k, 0.0):g}"
    return None


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """An unreachable tracking server fails in seconds, before Ray starts (MLflow's client retries for minutes)."""
    from bench import track

    try:
        track.check_server(uri, timeout)
    except track.TrackingError as e:
        raise PlacementError(str(e)) from None


def check_shared_store(uri: str, alive_nodes: int) -> None:
    """A SQLite file lives on one machine; trials on the other nodes would write a file of their own, or fail."""
    if uri.startswith("sqlite:") and alive_nodes > 1:
        raise PlacementError(f"tracking URI {uri} is a SQLite file on this machine, but the Ray cluster has "
                             f"{alive_nodes} nodes and workers on the others cannot reach it; run 'bench server' "
                             "on the head and pass --tracking-uri http://HEAD:5000")
