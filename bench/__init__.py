"""bench: reproduce residual-network ablation tables with Ray, Lightning and MLflow."""

import os

__version__ = "0.1.0"

# MLflow prints "🏃 View run ... at: http://..." (and "🧪 View experiment") on stdout each time a run ends
# against a tracking server: a line per trial. bench prints where to browse runs itself. Set here, before
# MLflow is imported anywhere (driver and Ray workers alike); MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT=false
# in the environment brings the lines back.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


class BenchError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""

    exit_code = 1
