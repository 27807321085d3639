"""The suite schema: one YAML file describes one table or figure of a paper.

A suite names the paper, its cells (one model configuration = one cell of the paper's table), the training
protocol, seeds, resources, named profiles that override the protocol, and claims over cells. `load_suite`
validates everything up front so that a bad file fails before anything is scheduled.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench import BenchError

SUITES_DIR = Path(__file__).resolve().parent / "suites"  # package data; top-level suites/ links here

# Metrics a cell or claim may name. `iters_to:<metric><=<thr>` is derived from the curves by the report.
# test_error is the final epoch's. No test-set minimum over epochs: that would select on the test set.
METRICS = (
    "train_error", "test_error", "test_top5_error", "val_error",
    "train_loss", "test_loss", "test_accuracy",
    # Chosen on the validation split (protocols with val_split > 0): the epoch of the lowest val_error and the
    # test error measured at that epoch.
    "best_val_epoch", "best_val_epoch_test_error",
)
_ITERS_TO = re.compile(r"^iters_to:(train_error|test_error|train_loss|val_error)<=([0-9.]+)$")


class SpecError(BenchError):
    exit_code = 2


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def check_metric(m: str) -> str:
    if m in METRICS or _ITERS_TO.match(m):
        return m
    raise ValueError(f"unknown metric {m!r}; expected one of {', '.join(METRICS)} or 'iters_to:train_error<=0.3'")


class Paper(_Strict):
    citation: str
    ref: str                                   # "Table 6", "Figure 1"
    dataset: str                               # the dataset the paper's numbers are on
    arxiv: str | None = None
    note: str | None = None


class PaperValue(_Strict):
    value: float
    metric: str = "test_error"
    unit: Literal["percent", "fraction"] = "percent"
    stat: Literal["single", "mean", "median", "best"] = "single"
    note: str | None = None

    _m = field_validator("metric")(classmethod(lambda cls, v: check_metric(v)))


class Cell(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    model: str
    kwargs: dict[str, Any] = {}
    row: str
    col: str = ""
    paper: PaperValue | None = None
    # Per-cell protocol overrides (deep-merged), e.g. ResNet-110's lr warm-up.
    protocol: dict[str, Any] = {}
    method: Literal["supervised", "fitnet"] = "supervised"
    teacher: str | None = None                 # cell id whose trial must finish first (FitNet students)
    resources: dict[str, float] = {}           # e.g. ResNet-1202 wants a whole GPU where its suite shares one

    _r = field_validator("resources")(classmethod(lambda cls, v: _check_resources(v)))


class Optimizer(_Strict):
    name: Literal["sgd", "rmsprop"] = "sgd"    # FitNets trained with RMSProp
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    nesterov: bool = False
    alpha: float = Field(0.99, gt=0, lt=1)     # RMSProp smoothing
    eps: float = Field(1e-8, gt=0)

    @model_validator(mode="after")
    def _nesterov(self) -> Optimizer:
        if self.nesterov and (self.name != "sgd" or self.momentum == 0):
            raise ValueError("nesterov needs SGD with momentum > 0")
        return self


class Warmup(_Strict):
    lr: float = Field(gt=0)
    iterations: int = Field(gt=0)              # fixed length (ResNet-110: 400 its, "until train error < 80%")


class Schedule(_Strict):
    # exponential: lr * gamma ** (completed epochs), as Highway Fig. 1's per-epoch decay.
    kind: Literal["multistep", "constant", "cosine", "exponential"] = "multistep"
    unit: Literal["iterations", "epochs", "fraction"] = "iterations"
    milestones: list[float] = []
    gamma: float = Field(0.1, gt=0, le=1)
    warmup: Warmup | None = None

    @field_validator("milestones")
    @classmethod
    def _sorted(cls, v: list[float]) -> list[float]:
        if v != sorted(v) or any(m <= 0 for m in v):
            raise ValueError("milestones must be positive and increasing")
        return v


class Augment(_Strict):
    crop_pad: int = Field(4, ge=0)
    flip: bool = True


class Distill(_Strict):
    """FitNets' two stages: hint regression, then knowledge distillation."""
    hint_epochs: float = Field(1, ge=0)
    temperature: float = Field(3.0, gt=0)
    lambda_start: float = Field(4.0, ge=0)     # weight on the soft (teacher) term, annealed linearly
    lambda_end: float = Field(1.0, ge=0)


class Protocol(_Strict):
    optimizer: Optimizer = Optimizer()
    batch_size: int = Field(128, gt=0)
    iterations: int | None = Field(None, gt=0)
    epochs: float | None = Field(None, gt=0)
    schedule: Schedule = Schedule()
    augment: Augment = Augment()
    val_split: int = Field(0, ge=0)            # images held out of train for validation
    train_subset: int | None = Field(None, gt=0)  # train on a seeded subset (Highway 3/4: 40K of 50K)
    test_subset: int | None = Field(None, gt=0)
    eval_every: int = Field(1, gt=0)           # epochs between test evaluations
    dropout: float | None = None
    precision: Literal["32", "tf32", "bf16-mixed", "16-mixed"] = "32"   # tf32: fp32 with TF32 math on CUDA
    distill: Distill | None = None

    @model_validator(mode="after")
    def _length(self) -> Protocol:
        if (self.iterations is None) == (self.epochs is None):
            raise ValueError("give exactly one of 'iterations' or 'epochs'")
        if self.schedule.unit == "iterations" and self.iterations is None and self.schedule.milestones:
            raise ValueError("schedule.unit 'iterations' needs 'iterations' (or use unit 'fraction')")
        return self


# A data-parallel trial's own slot only coordinates; its Ray Train workers hold the CPUs and GPUs. Ray refuses a
# zero-CPU Tune trial, so the slot asks for a sliver.
COORDINATOR_CPU = 0.01


class Resources(_Strict):
    """Per trial. With workers > 1 a trial is data-parallel (Ray Train): cpus/gpus are then per worker."""
    cpus: float = Field(1, gt=0)
    gpus: float = Field(0, ge=0)
    workers: int = Field(1, ge=1)

    @property
    def parallel(self) -> bool:
        return self.workers > 1

    def slot(self) -> dict[str, float]:
        """What the trial's own (Tune) slot holds."""
        return {"cpu": COORDINATOR_CPU, "gpu": 0.0} if self.parallel else {"cpu": self.cpus, "gpu": self.gpus}

    def total(self) -> tuple[float, float]:
        """(CPUs, GPUs) the trial holds at once, workers and coordinator together."""
        return (self.workers * self.cpus + (COORDINATOR_CPU if self.parallel else 0.0), self.workers * self.gpus)


class SearchParam(_Strict):
    dist: Literal["loguniform", "uniform", "choice", "randint"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None


class Search(_Strict):
    """A random search per cell (Highway Fig. 1: each curve is the best of a search)."""
    num_samples: int = Field(gt=0)
    metric: str = "train_loss"
    mode: Literal["min", "max"] = "min"
    space: dict[str, SearchParam]               # dotted protocol paths: "optimizer.lr", "model.gate_bias"


class Claim(_Strict):
    """order: mean(lhs) op mean(rhs), seeds of a side's cells pooled.
    interaction: lhs [a, b], rhs [c, d] state (a - b) op (c - d), judged on per-seed differences."""
    id: str
    text: str
    metric: str
    kind: Literal["order", "interaction"] = "order"
    lhs: list[str]
    op: Literal["<", ">", "<=", ">=", "~="]
    rhs: list[str]
    margin: float = Field(0.0, ge=0)            # absolute, in the metric's fraction units
    alpha: float = Field(0.05, gt=0, lt=1)
    # The paper's effect, lhs - rhs (for interaction: (a - b) - (c - d)) in fraction units like margin; the
    # report derives it from the cells' paper values when they have them and this is not given.
    paper_effect: float | None = None
    paper_effect_note: str = ""                 # where the number comes from
    if_fails: str = ""                          # shown under a claim that fails or is inconclusive

    @field_validator("lhs", "rhs", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    _m = field_validator("metric")(classmethod(lambda cls, v: check_metric(v)))

    @model_validator(mode="after")
    def _shape(self) -> Claim:
        if not self.lhs or not self.rhs:
            raise ValueError(f"claim {self.id!r}: lhs and rhs each need at least one cell")
        if self.kind != "interaction":
            return self
        if self.op == "~=":
            raise ValueError(f"claim {self.id!r}: an interaction claim takes <, >, <= or >=, not '~='")
        for side, cells in (("lhs", self.lhs), ("rhs", self.rhs)):
            if len(cells) != 2 or cells[0] == cells[1]:
                raise ValueError(f"claim {self.id!r}: an interaction claim needs exactly 2 distinct cells in "
                                 f"{side} ([a, b] meaning a - b), got {cells}")
        return self


class Layout(_Strict):
    rows: str = "model"                         # heading of the row labels
    cols: str = ""                              # heading over the column labels
    metric: str = "test_error"                  # what the table cells show
    stat: Literal["mean", "median"] = "mean"
    figure: Literal["none", "train_curves", "train_test_curves", "loss_curves"] = "train_curves"

    _m = field_validator("metric")(classmethod(lambda cls, v: check_metric(v)))


def _check_resources(v: dict[str, Any]) -> dict[str, Any]:
    """Partial overrides of Resources: a typo such as 'worker' must fail, not be ignored."""
    Resources.model_validate(v)
    return v


class Proxy(_Strict):
    """A net that stands in for a cell's in one profile (a smaller base depth, a narrower stage), and why it keeps
    the comparison's principle. The report prints the note beside both nets' parameters and multiply-adds."""
    model: str
    kwargs: dict[str, Any] = {}
    note: str = Field(min_length=1)


_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> float:
    """'90s', '45m', '2h', '1h30m' -> seconds."""
    m = _DURATION.match(text.strip().lower())
    if not text.strip() or not m or not any(m.groups()):
        raise SpecError(f"--budget {text!r} is not a duration; write e.g. 90s, 45m, 2h or 1h30m")
    h, mi, s = (int(g or 0) for g in m.groups())
    seconds = 3600 * h + 60 * mi + s
    if seconds <= 0:
        raise SpecError(f"--budget {text!r} is zero")
    return float(seconds)


class UntilDecided(_Strict):
    """A profile's sequential design, fixed before its runs: `bench run --until-decided` takes these unless its
    own --max-seeds/--budget are given."""
    max_seeds: int | None = Field(None, ge=2)
    budget: str | None = None                  # a duration: 90s, 45m, 1h30m

    @field_validator("budget")
    @classmethod
    def _budget(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                parse_duration(v)
            except SpecError as e:
                raise ValueError(str(e)) from None
        return v


class Profile(_Strict):
    description: str = ""
    dataset: str | None = None
    seeds: list[int] | int | None = None
    protocol: dict[str, Any] = {}
    resources: dict[str, Any] = {}
    # Model keyword arguments for every cell (e.g. a narrower `width`); the profile wins over the cell.
    model_kwargs: dict[str, Any] = {}
    cells: list[str] | None = None              # restrict to these cell ids
    search: dict[str, Any] | None = None
    # Claim id -> why this profile cannot decide (or fails) that claim; wins over the claim's if_fails.
    claim_notes: dict[str, str] = {}
    # Cell id -> the net that stands in for the cell's in this profile (the profile's model_kwargs still apply).
    proxies: dict[str, Proxy] = {}
    until_decided: UntilDecided | None = None

    _r = field_validator("resources")(classmethod(lambda cls, v: _check_resources(v)))


class Suite(_Strict):
    name: str = Field(pattern=r"^[a-z0-9_\-]+$")
    title: str
    paper: Paper
    dataset: str
    layout: Layout = Layout()
    cells: list[Cell] = Field(min_length=1)
    protocol: Protocol
    seeds: list[int] = [0]
    resources: Resources = Resources()
    search: Search | None = None
    claims: list[Claim] = []
    profiles: dict[str, Profile] = {}
    # Where each protocol setting comes from in the paper; shown by `bench plan`.
    sources: dict[str, str] = {}

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, v: Any) -> Any:
        return list(range(v)) if isinstance(v, int) else v

    @model_validator(mode="after")
    def _refs(self) -> Suite:
        ids = [c.id for c in self.cells]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate cell ids: {', '.join(sorted(dup))}")
        known = set(ids)
        for c in self.cells:
            if c.teacher is not None and c.teacher not in known:
                raise ValueError(f"cell {c.id!r}: teacher {c.teacher!r} is not a cell of this suite")
            if c.method == "fitnet" and c.teacher is None:
                raise ValueError(f"cell {c.id!r}: method 'fitnet' needs a teacher")
        cids = [cl.id for cl in self.claims]
        dup = {i for i in cids if cids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate claim ids: {', '.join(sorted(dup))}")
        for cl in self.claims:
            for ref in cl.lhs + cl.rhs:
                if ref not in known:
                    raise ValueError(f"claim {cl.id!r}: unknown cell {ref!r}")
        for pname, p in self.profiles.items():
            for ref in p.cells or []:
                if ref not in known:
                    raise ValueError(f"profile {pname!r}: unknown cell {ref!r}")
            for ref in p.claim_notes:
                if ref not in cids:
                    raise ValueError(f"profile {pname!r}: claim_notes names unknown claim {ref!r}")
            for ref in p.proxies:
                if ref not in known:
                    raise ValueError(f"profile {pname!r}: proxies names unknown cell {ref!r}")
        return self

    def cell(self, cid: str) -> Cell:
        return next(c for c in self.cells if c.id == cid)

    def profile_names(self) -> list[str]:
        return ["paper", *[p for p in self.profiles if p != "paper"]]


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _format_error(path: str, err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(x) for x in e["loc"]) or "<root>"
    msg = e["msg"].removeprefix("Value error, ")
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{path}: {loc}: {msg}{more}"


def resolve_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    return SUITES_DIR / f"{name_or_path}.yaml"


def load_suite(name_or_path: str | Path) -> Suite:
    path = resolve_path(name_or_path)
    if not path.is_file():
        known = ", ".join(sorted(q.stem for q in SUITES_DIR.glob("*.yaml")))
        raise SpecError(f"{path}: no such suite file (known suites: {known})")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise SpecError(f"{path}: {where}invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: <root>: expected a mapping, got {type(raw).__name__}")
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as e:
        raise SpecError(_format_error(str(path), e)) from None
    # Validate every profile and every cell override now, so a typo in 'smoke' fails before 'paper' runs.
    for pname in suite.profile_names():
        for c in suite.cells:
            try:
                resolve_protocol(suite, pname, c)
            except ValidationError as e:
                raise SpecError(_format_error(f"{path}: profile {pname}: cell {c.id}", e)) from None
    return suite


def get_profile(suite: Suite, profile: str) -> Profile:
    if profile == "paper":
        return suite.profiles.get("paper", Profile())
    if profile not in suite.profiles:
        raise SpecError(f"suite {suite.name}: unknown profile {profile!r} (have: {', '.join(suite.profile_names())})")
    return suite.profiles[profile]


def resolve_protocol(suite: Suite, profile: str, cell: Cell) -> Protocol:
    """Suite protocol <- cell overrides <- profile overrides (the profile wins: `smoke` must stay short)."""
    p = get_profile(suite, profile)
    base = suite.protocol.model_dump()
    merged = deep_merge(deep_merge(base, cell.protocol), p.protocol)
    # A profile that switches epochs<->iterations must drop the other length key.
    if "epochs" in p.protocol and "iterations" not in p.protocol:
        merged["iterations"] = None
    if "iterations" in p.protocol and "epochs" not in p.protocol:
        merged["epochs"] = None
    return Protocol.model_validate(merged)


def list_suites() -> list[Path]:
    return sorted(SUITES_DIR.glob("*.yaml"))
