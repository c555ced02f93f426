"""Settings from GENQ_* environment variables, with embedded single-machine defaults."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
# `client up` keeps the embedded broker's password here (0600); every genq process of the home uses it
BROKER_PASSWORD_FILE = Path("broker") / "password"
LOCAL_BROKER_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
DEFAULT_SD_MODEL = "runwayml/stable-diffusion-v1-5"
DEFAULT_VISIBILITY_TIMEOUT_S = 6 * 3600  # above the longest job: Redis redelivers after this
DEFAULT_HEARTBEAT_INTERVAL_S = 2.0
DEFAULT_LEASE_S = 30.0  # a running job's lease; its heartbeat renews it; past it, the job is taken over
DEFAULT_RECONCILE_INTERVAL_S = 5.0  # how often each worker's reconciler looks for stranded jobs
DEFAULT_RESEND_AFTER_S = 15.0  # a queued job's wake-up older than this and not in the broker is sent again
DEFAULT_RETRY_BACKOFF_S = 10.0  # a failed run with --retries left runs again after this, doubling each time
DEFAULT_RETRY_FOR_S = 60.0  # database writes and broker sends retry this long before a job is failed
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_MODEL_CACHE_SIZE = 2
DEFAULT_QUEUE = "gpu"
# One sd job's size: images x width x height, and that times the denoising steps (8 images of 1024x1024 at 50 steps).
DEFAULT_SD_MAX_PIXELS = 8 * 1024 * 1024
DEFAULT_SD_MAX_PIXEL_STEPS = DEFAULT_SD_MAX_PIXELS * 50


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    broker_url: str
    artifact_root: Path
    data_root: Path
    sd_model: str
    queue: str
    visibility_timeout_s: int
    heartbeat_interval_s: float
    lease_s: float
    reconcile_interval_s: float
    resend_after_s: float
    retry_for_s: float
    retry_backoff_s: float
    max_attempts: int
    model_cache_size: int
    device: str  # "auto", "cpu" or "cuda"
    torch_threads: int  # CPU threads for torch in a worker; 0 keeps torch's default
    sd_max_pixels: int
    sd_max_pixel_steps: int
    model_roots: tuple[Path, ...]  # local SD models must lie under one of these; empty: anywhere

    def describe(self) -> dict[str, str]:
        """The settings as text for `client config`, with any password in a URL replaced by ***."""
        return {f.name: redact_url(str(getattr(self, f.name))) for f in fields(self)}


def redact_url(value: str) -> str:
    """`scheme://user:secret@host/...` -> `scheme://user:***@host/...`; a `password=` query too. Other text as is."""
    if "://" not in value:
        return value
    try:
        parts = urlsplit(value)
    except ValueError:
        return "***"  # unparseable but URL-like: print nothing of it rather than a secret
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hostport}"
    query = parts.query
    if query and "password" in query.lower():
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return value  # nothing secret; urlunsplit would also turn sqlite://// into sqlite://
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _broker_url(env: dict[str, str], home: Path) -> str:
    """GENQ_BROKER_URL, or the default; a local URL without credentials gets the password of the
    broker `client up` started for this home (GENQ_HOME/broker/password), when there is one."""
    url = env.get("GENQ_BROKER_URL") or DEFAULT_BROKER_URL
    parts = urlsplit(url)
    if parts.scheme != "redis" or parts.hostname not in LOCAL_BROKER_HOSTS or "@" in parts.netloc:
        return url
    try:
        password = (home / BROKER_PASSWORD_FILE).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return url
    if not password:
        return url
    return urlunsplit(parts._replace(netloc=f":{quote(password, safe='')}@{parts.netloc}"))


def _number(env: dict[str, str], name: str, default: float, cast=float):
    raw = env.get(name)
    if raw is None or raw == "":
        return cast(default)
    try:
        return cast(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def load_settings(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    home = Path(env.get("GENQ_HOME") or ".genq").expanduser().absolute()
    database_url = env.get("GENQ_DATABASE_URL") or f"sqlite:///{home / 'genq.sqlite3'}"
    return Settings(
        home=home,
        database_url=database_url,
        broker_url=_broker_url(env, home),
        artifact_root=Path(env.get("GENQ_ARTIFACT_ROOT") or home / "artifacts").expanduser().absolute(),
        data_root=Path(env.get("GENQ_DATA_ROOT") or home / "data").expanduser().absolute(),
        sd_model=env.get("GENQ_SD_MODEL") or DEFAULT_SD_MODEL,
        queue=env.get("GENQ_QUEUE") or DEFAULT_QUEUE,
        visibility_timeout_s=_number(env, "GENQ_VISIBILITY_TIMEOUT", DEFAULT_VISIBILITY_TIMEOUT_S, int),
        heartbeat_interval_s=_number(env, "GENQ_HEARTBEAT_INTERVAL", DEFAULT_HEARTBEAT_INTERVAL_S),
        # GENQ_STALE_AFTER is this setting's earlier name
        lease_s=_number(env, "GENQ_LEASE", _number(env, "GENQ_STALE_AFTER", DEFAULT_LEASE_S)),
        reconcile_interval_s=_number(env, "GENQ_RECONCILE_INTERVAL", DEFAULT_RECONCILE_INTERVAL_S),
        resend_after_s=_number(env, "GENQ_RESEND_AFTER", DEFAULT_RESEND_AFTER_S),
        retry_for_s=_number(env, "GENQ_RETRY_FOR", DEFAULT_RETRY_FOR_S),
        retry_backoff_s=_number(env, "GENQ_RETRY_BACKOFF", DEFAULT_RETRY_BACKOFF_S),
        max_attempts=_number(env, "GENQ_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS, int),
        model_cache_size=_number(env, "GENQ_MODEL_CACHE_SIZE", DEFAULT_MODEL_CACHE_SIZE, int),
        device=env.get("GENQ_DEVICE") or "auto",
        torch_threads=_number(env, "GENQ_TORCH_THREADS", 0, int),
        sd_max_pixels=_number(env, "GENQ_SD_MAX_PIXELS", DEFAULT_SD_MAX_PIXELS, int),
        sd_max_pixel_steps=_number(env, "GENQ_SD_MAX_PIXEL_STEPS", DEFAULT_SD_MAX_PIXEL_STEPS, int),
        model_roots=tuple(Path(p).expanduser().absolute() for p in (env.get("GENQ_MODEL_ROOTS") or "").split(os.pathsep) if p),
    )
