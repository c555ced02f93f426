"""genq: a batch job runner for generative-model work.

The repository keeps its four parts at the top (core/, client/, worker/, migrations/); they are
installed as genq.core, genq.client, genq.worker and genq.migrations (see setup.py).
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("genq")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
