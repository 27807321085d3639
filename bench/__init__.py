"""bench: reproduce residual-network ablation tables with Ray, Lightning and MLflow."""

__version__ = "0.1.0"


class BenchError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""

    exit_code = 1
