"""Small helpers shared by the test files."""

from bench import models
from bench.trials import make_plan


def expand(suite, profile="paper", dataset=None, seeds=None, cells=None):
    """The plan's trials (search samples drawn) for a suite under a profile."""
    return make_plan(suite, profile, dataset, seeds, cells,
                     model_options=lambda m: set(models.model_options(m))).trials


def proto(t) -> dict:
    return t.protocol.model_dump()
