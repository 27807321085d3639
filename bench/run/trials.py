"""Suite -> trials. A trial is (cell, seed, profile, dataset) with everything resolved, and a stable hash.

Pure logic: no Ray, no MLflow, so it is cheap to test and to call from `bench plan`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.spec import SpecError, Suite, get_profile, resolve_protocol

# Bump when the meaning of a config changes (e.g. training code semantics), so old runs are not reused.
HASH_VERSION = 1


@dataclass(frozen=True)
class Trial:
    suite: str
    cell: str
    seed: int
    profile: str
    dataset: str
    model: str
    model_kwargs: dict[str, Any]
    protocol: dict[str, Any]
    method: str = "supervised"
    teacher: str | None = None              # config hash of the teacher trial
    resources: dict[str, float] = field(default_factory=dict)
    search: dict[str, Any] | None = None    # sampled search values, once a search assigns them

    @property
    def name(self) -> str:
        return f"{self.cell}-s{self.seed}"

    def identity(self) -> dict[str, Any]:
        """What determines the result. Resources and profile names are excluded: they don't change the numbers."""
        return {
            "v": HASH_VERSION, "suite": self.suite, "cell": self.cell, "seed": self.seed, "dataset": self.dataset,
            "model": self.model, "model_kwargs": self.model_kwargs, "protocol": self.protocol,
            "method": self.method, "teacher": self.teacher, "search": self.search,
        }

    @property
    def config_hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trial:
        return cls(**d)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'optimizer': {'lr': 0.1}} -> {'optimizer.lr': 0.1}; used for MLflow params."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def seeds_for(suite: Suite, profile: str, override: int | None = None) -> list[int]:
    if override is not None:
        return list(range(override))
    p = get_profile(suite, profile)
    if p.seeds is None:
        return list(suite.seeds)
    return list(range(p.seeds)) if isinstance(p.seeds, int) else list(p.seeds)


def expand(suite: Suite, profile: str = "paper", dataset: str | None = None, seeds: int | None = None,
           cells: list[str] | None = None) -> list[Trial]:
    """Every (cell, seed) of the suite under a profile; teachers come before their students."""
    p = get_profile(suite, profile)
    ds = dataset or p.dataset or suite.dataset
    res = suite.resources.model_dump() | p.resources
    wanted = cells or p.cells
    if wanted:
        unknown = set(wanted) - {c.id for c in suite.cells}
        if unknown:
            raise SpecError(f"suite {suite.name}: unknown cell(s) {', '.join(sorted(unknown))}")
        # A student needs its teacher, so selecting a student pulls the teacher in.
        need = set(wanted)
        for cid in list(need):
            t = suite.cell(cid).teacher
            while t:
                need.add(t)
                t = suite.cell(t).teacher
        wanted = need
    by_key: dict[tuple[str, int], Trial] = {}
    out: list[Trial] = []
    for cell in _topological(suite):
        if wanted and cell.id not in wanted:
            continue
        proto = resolve_protocol(suite, profile, cell).model_dump()
        for seed in seeds_for(suite, profile, seeds):
            teacher = None
            if cell.teacher:
                # A student uses the teacher trial of the same seed.
                teacher = by_key[(cell.teacher, seed)].config_hash
            t = Trial(suite=suite.name, cell=cell.id, seed=seed, profile=profile, dataset=ds, model=cell.model,
                      model_kwargs=dict(cell.kwargs), protocol=proto, method=cell.method, teacher=teacher,
                      resources=res | cell.resources | p.resources)
            by_key[(cell.id, seed)] = t
            out.append(t)
    return out


def _topological(suite: Suite):
    done: set[str] = set()
    order = []
    pending = list(suite.cells)
    while pending:
        ready = [c for c in pending if c.teacher is None or c.teacher in done]
        if not ready:
            raise SpecError(f"suite {suite.name}: teacher cycle among {', '.join(c.id for c in pending)}")
        for c in ready:
            order.append(c)
            done.add(c.id)
            pending.remove(c)
    return order


def waves(trials: list[Trial]) -> list[list[Trial]]:
    """Group trials so that every trial's teacher sits in an earlier wave."""
    by_hash = {t.config_hash: t for t in trials}
    level: dict[str, int] = {}

    def depth(t: Trial) -> int:
        h = t.config_hash
        if h not in level:
            level[h] = 0 if t.teacher is None or t.teacher not in by_hash else depth(by_hash[t.teacher]) + 1
        return level[h]

    out: list[list[Trial]] = []
    for t in trials:
        d = depth(t)
        while len(out) <= d:
            out.append([])
        out[d].append(t)
    return out


def effective_search(suite: Suite, profile: str) -> dict[str, Any] | None:
    """The suite's search block with the profile's overrides (e.g. smoke: num_samples 2), or None."""
    if suite.search is None:
        return None
    p = get_profile(suite, profile)
    from bench.spec import Search, deep_merge

    return Search.model_validate(deep_merge(suite.search.model_dump(), p.search or {})).model_dump()


def apply_search(trial: Trial, values: dict[str, Any], model_options: set[str]) -> Trial:
    """Put one search sample into a trial: 'model.x' keys go to the model's kwargs (only if the model takes x:
    a plain net has no gate bias), the others are dotted protocol paths."""
    from bench.spec import Protocol

    proto = json.loads(json.dumps(trial.protocol))
    kwargs = dict(trial.model_kwargs)
    used: dict[str, Any] = {}
    for key, v in sorted(values.items()):
        if key.startswith("model."):
            name = key.removeprefix("model.")
            if name not in model_options:
                continue
            kwargs[name] = v
        else:
            node = proto
            *parents, leaf = key.split(".")
            for k in parents:
                node = node[k]
            if leaf not in node:
                raise SpecError(f"search key {key!r} is not a protocol setting")
            node[leaf] = v
        used[key] = v
    proto = Protocol.model_validate(proto).model_dump()
    return Trial(**{**trial.to_dict(), "protocol": proto, "model_kwargs": kwargs, "search": used})
