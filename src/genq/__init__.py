"""genq: a batch job runner for generative-model work.

`from genq import Client` is its Python API (genq.api); importing genq alone loads nothing else.
`genq.app` (also `genq.celery`) is genq's Celery app, made on first use from the same settings as every
genq command (GENQ_BROKER_URL, the home's password): what `celery -A genq inspect ping` and Celery's
other tools (`status`, `inspect active`, Flower) find.

Its four parts: genq.core (no Celery but its broker), genq.worker, genq.client and genq.migrations.
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("genq")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"


_API = ("Client", "Job", "Group", "Artifact", "SpecError", "SweepPointError", "NotFound", "OverLimit")
_CELERY_APP = ("app", "celery")  # the names `celery -A genq` looks for


def __getattr__(name: str):
    if name in _API:
        from genq import api

        return getattr(api, name)
    if name in _CELERY_APP:
        from genq.core.broker import make_app
        from genq.core.config import load_settings

        app = make_app(load_settings())
        globals().update(dict.fromkeys(_CELERY_APP, app))  # made once: later lookups find it here
        return app
    raise AttributeError(f"module 'genq' has no attribute {name!r}")
