"""genq: a batch job runner for generative-model work.

`from genq import Client` is its Python API (genq.api); importing genq alone loads nothing else.

The repository keeps its four parts at the top (core/, client/, worker/, migrations/); they are
installed as genq.core, genq.client, genq.worker and genq.migrations (see setup.py).
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("genq")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"


_API = ("Client", "Job", "Group", "Artifact", "SpecError", "SweepPointError", "NotFound")


def __getattr__(name: str):
    if name in _API:
        from genq import api

        return getattr(api, name)
    raise AttributeError(f"module 'genq' has no attribute {name!r}")
