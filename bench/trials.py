"""The planning layer: suite + profile -> one Plan of typed trials (cell × seed, and × sample for a search).

Pure: no Ray, MLflow or torch imports, so `bench plan`, the report and the tracker read the same plan the driver
runs. A Trial stays typed end to end; it becomes a dict only at the Ray boundary (to_dict/from_dict).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Callable

from bench.spec import Protocol, Resources, Search, SpecError, Suite, deep_merge, get_profile, resolve_protocol

# Bump when the meaning of a config's numbers changes, so finished runs of the old meaning are not reused.
# 2: the per-epoch `lr` metric is the lr of the epoch's last step; FitNet hints use Eq. 3's summed L2.
HASH_VERSION = 2


@dataclass(frozen=True)
class Trial:
    suite: str
    cell: str
    seed: int
    profile: str
    dataset: str
    model: str
    model_kwargs: dict[str, Any]
    protocol: Protocol
    method: str = "supervised"
    teacher: str | None = None              # config hash of the teacher trial
    resources: Resources = field(default_factory=Resources)
    search: dict[str, Any] | None = None    # this sample's values, for a search
    search_base: str | None = None          # config hash of the (cell, seed) the sample belongs to

    @property
    def name(self) -> str:
        return f"{self.cell}-s{self.seed}" + (f"#{self.config_hash[:5]}" if self.search is not None else "")

    def identity(self) -> dict[str, Any]:
        """What determines the result. Resources and profile names are excluded: they don't change the numbers."""
        return {
            "v": HASH_VERSION, "suite": self.suite, "cell": self.cell, "seed": self.seed, "dataset": self.dataset,
            "model": self.model, "model_kwargs": self.model_kwargs, "protocol": self.protocol.model_dump(),
            "method": self.method, "teacher": self.teacher, "search": self.search,
        }

    @cached_property
    def config_hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; for the Ray boundary and MLflow params only."""
        return {"suite": self.suite, "cell": self.cell, "seed": self.seed, "profile": self.profile,
                "dataset": self.dataset, "model": self.model, "model_kwargs": dict(self.model_kwargs),
                "protocol": self.protocol.model_dump(), "method": self.method, "teacher": self.teacher,
                "resources": self.resources.model_dump(), "search": self.search, "search_base": self.search_base}

    @classmethod
    def adhoc(cls, model: str, protocol: dict[str, Any], *, seed: int = 0, cell: str = "adhoc",
              dataset: str = "synthetic", cpus: float = 1, gpus: float = 0, **kw: Any) -> Trial:
        """A trial outside any suite (benchmarks, tests)."""
        return cls(suite="adhoc", cell=cell, seed=seed, profile="adhoc", dataset=dataset, model=model,
                   model_kwargs=kw.pop("model_kwargs", {}), protocol=Protocol.model_validate(protocol),
                   resources=Resources(cpus=cpus, gpus=gpus), **kw)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trial:
        return cls(**{**d, "protocol": Protocol.model_validate(d["protocol"]),
                      "resources": Resources.model_validate(d.get("resources") or {})})


@dataclass(frozen=True)
class Plan:
    """A suite resolved under one profile. `trials` are what runs: for a search, every drawn sample."""
    suite: Suite
    profile: str
    dataset: str
    seeds: list[int]
    trials: list[Trial]
    search: Search | None = None

    @property
    def cells(self) -> list[str]:
        return list(dict.fromkeys(t.cell for t in self.trials))

    def summary(self) -> str:
        """One line; never every seed (a suite may ask for thousands)."""
        seeds = f"{len(self.seeds)} seeds " + (str(self.seeds) if len(self.seeds) <= 10
                                              else f"[{self.seeds[0]}..{self.seeds[-1]}]")
        extra = f" x {self.search.num_samples} search samples" if self.search else ""
        return (f"suite {self.suite.name}: {len(self.trials)} trials = {len(self.cells)} cells x {seeds}{extra} "
                f"(profile {self.profile}, dataset {self.dataset})")


def _check_profile_kwargs(suite: Suite, profile: str, kwargs: dict, model_options) -> None:
    """A profile model kwarg that no cell's model takes is a typo, not a setting to drop silently."""
    if not kwargs or model_options is None:
        return
    taken = set().union(*(model_options(c.model) for c in suite.cells),
                        *(model_options(x.model) for x in get_profile(suite, profile).proxies.values()))
    unknown = sorted(set(kwargs) - taken)
    if unknown:
        raise SpecError(f"suite {suite.name}: profile {profile}: model_kwargs {', '.join(unknown)} "
                        f"taken by no model of the suite")


def make_plan(suite: Suite, profile: str = "paper", dataset: str | None = None, seeds: int | None = None,
              cells: list[str] | None = None,
              model_options: Callable[[str], set[str]] | None = None, first_seed: int = 0) -> Plan:
    """Resolve the profile once; expand cells × seeds (teachers before students); draw search samples.

    model_options(model) -> the keyword arguments a model takes: a search's 'model.x' values reach only models
    that take x (a plain net has no gate bias). Needed only for a suite with a search.

    first_seed numbers a count of seeds from there: pilot runs (1000, 1001, ...) that share no seed with the
    confirmatory ones (0, 1, ...)."""
    p = get_profile(suite, profile)
    if seeds is not None and seeds < 1:
        raise SpecError(f"--seeds must be at least 1, got {seeds}")
    if first_seed < 0:
        raise SpecError(f"--first-seed must be at least 0, got {first_seed}")
    count = seeds if seeds is not None else p.seeds if isinstance(p.seeds, int) else None
    if first_seed and count is None:
        raise SpecError(f"--first-seed numbers a count of seeds; profile {profile} lists its seeds: pass --seeds N")
    seed_list = list(range(first_seed, first_seed + count)) if count is not None else (
        list(suite.seeds) if p.seeds is None else list(p.seeds))
    if not seed_list:
        raise SpecError(f"suite {suite.name}: profile {profile} has no seeds")
    ds = dataset or p.dataset or suite.dataset
    base_res = deep_merge(suite.resources.model_dump(), p.resources)
    wanted = _with_teachers(suite, cells or p.cells)
    by_key: dict[tuple[str, int], Trial] = {}
    out: list[Trial] = []
    _check_profile_kwargs(suite, profile, p.model_kwargs, model_options)
    for cell in _topological(suite):
        if wanted and cell.id not in wanted:
            continue
        proto = resolve_protocol(suite, profile, cell)
        proxy = p.proxies.get(cell.id)
        model = proxy.model if proxy else cell.model
        # A profile-wide model kwarg (width, init) reaches the cells whose model takes it; it wins over the cell's
        # own, and a proxy's (set in the same profile, for one cell) wins over it.
        pkw = {k: v for k, v in p.model_kwargs.items() if model_options is None or k in model_options(model)}
        kwargs = {**pkw, **proxy.kwargs} if proxy else {**cell.kwargs, **pkw}
        # The profile wins over the cell (a smoke profile stays small), as for the protocol.
        res = Resources.model_validate(base_res | cell.resources | p.resources)
        for seed in seed_list:
            # A student uses the teacher trial of the same seed.
            teacher = by_key[(cell.teacher, seed)].config_hash if cell.teacher else None
            t = Trial(suite=suite.name, cell=cell.id, seed=seed, profile=profile, dataset=ds, model=model,
                      model_kwargs=kwargs, protocol=proto, method=cell.method, teacher=teacher,
                      resources=res)
            by_key[(cell.id, seed)] = t
            out.append(t)
    search = None
    if suite.search is not None:
        search = Search.model_validate(deep_merge(suite.search.model_dump(), p.search or {}))
        if model_options is None:
            raise ValueError("a suite with a search needs model_options to draw its samples")
        out = [s for t in out for s in draw_samples(t, search, model_options(t.model))]
    return Plan(suite, profile, ds, seed_list, out, search)


def _with_teachers(suite: Suite, wanted: list[str] | None) -> set[str]:
    if not wanted:
        return set()
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
    return need


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


def _draw(rng: random.Random, p) -> Any:
    if p.dist == "loguniform":
        return math.exp(rng.uniform(math.log(p.low), math.log(p.high)))
    if p.dist == "uniform":
        return rng.uniform(p.low, p.high)
    if p.dist == "randint":
        return rng.randrange(int(p.low), int(p.high))
    return p.values[rng.randrange(len(p.values))]


def draw_samples(base: Trial, search: Search, model_options: set[str]) -> list[Trial]:
    """The search's samples of one (cell, seed), drawn up front from a generator seeded by the base trial's hash:
    a re-run draws the same samples, so finished ones are recognised by their hash and skipped."""
    rng = random.Random(int(base.config_hash, 16))
    return [apply_search(base, {k: _draw(rng, p) for k, p in sorted(search.space.items())}, model_options)
            for _ in range(search.num_samples)]


def apply_search(trial: Trial, values: dict[str, Any], model_options: set[str]) -> Trial:
    """Put one search sample into a trial: 'model.x' keys go to the model's kwargs (only if the model takes x),
    the others are dotted protocol paths."""
    proto = trial.protocol.model_dump()
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
    return replace(trial, protocol=Protocol.model_validate(proto), model_kwargs=kwargs, search=used,
                   search_base=trial.config_hash)
