"""Small helpers shared by the test files."""

import contextlib
import io
import os
from types import SimpleNamespace

from bench import models
from bench.trials import make_plan


def expand(suite, profile="paper", dataset=None, seeds=None, cells=None):
    """The plan's trials (search samples drawn) for a suite under a profile."""
    return make_plan(suite, profile, dataset, seeds, cells,
                     model_options=lambda m: set(models.model_options(m))).trials


def proto(t) -> dict:
    return t.protocol.model_dump()


def run_cli(args, cwd=None) -> SimpleNamespace:
    """`bench ARGS` through bench.cli.main in this process (what the `bench` script calls), in `cwd`: returncode,
    stdout, stderr. A fresh interpreter would add seconds of imports to every call, and to any time bound."""
    from bench.cli import main

    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main([str(a) for a in args])
            except SystemExit as e:   # argparse
                rc = e.code
    finally:
        os.chdir(here)
    return SimpleNamespace(returncode=rc, stdout=out.getvalue(), stderr=err.getvalue())
