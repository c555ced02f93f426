"""Settings from GENQ_* environment variables, with embedded single-machine defaults."""
from __future__ import annotations

import math
import os
import re
import socket
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

HOME_FOLDER = ".genq"  # GENQ_HOME when unset is ~/.genq: the user's own, whatever the current folder
STORE_FILE = "genq.sqlite3"  # the default SQLite store, in GENQ_HOME
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
# `client up` keeps the embedded broker's password here (0600); every genq process of the home uses it
BROKER_PASSWORD_FILE = Path("broker") / "password"
# ... and the URL it started that broker at (0600, without the password): used when GENQ_BROKER_URL is unset
BROKER_URL_FILE = Path("broker") / "url"
LOCAL_BROKER_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
DEFAULT_SD_MODEL = "runwayml/stable-diffusion-v1-5"
DEFAULT_VISIBILITY_TIMEOUT_S = 6 * 3600  # above the longest job: Redis redelivers after this
DEFAULT_HEARTBEAT_INTERVAL_S = 2.0
DEFAULT_MAX_SWEEP = 1_000
MAX_SWEEP_CEILING = 1_000_000  # no sweep is larger, confirmed or not: its points are made and checked in memory
DEFAULT_LEASE_S = 30.0  # a running job's lease; its heartbeat renews it; past it, the job is taken over
DEFAULT_RECONCILE_INTERVAL_S = 5.0  # how often each worker's reconciler looks for stranded jobs
DEFAULT_RESEND_AFTER_S = 15.0  # a queued job's wake-up older than this and not in the broker is sent again
DEFAULT_RETRY_BACKOFF_S = 10.0  # a failed run with --retries left runs again after this, doubling each time
DEFAULT_RETRY_FOR_S = 60.0  # database writes and broker sends retry this long before a job is failed
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_MODEL_CACHE_SIZE = 2
DEFAULT_QUEUE = "gpu"
DEFAULT_PRIORITY = 5  # 0..9, higher runs first
DEFAULT_SD_MAX_BATCH = 8  # images in one UNet batch, over all the sd jobs a worker runs together
QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# One sd job's size: images x width x height, and that times the denoising steps (8 images of 1024x1024 at 50 steps).
DEFAULT_SD_MAX_PIXELS = 8 * 1024 * 1024
DEFAULT_SD_MAX_PIXEL_STEPS = DEFAULT_SD_MAX_PIXELS * 50
DEFAULT_WEBHOOK_TIMEOUT_S = 5.0  # a webhook POST that takes longer is a failed attempt
DEFAULT_WEBHOOK_BACKOFF_S = 10.0  # a failed delivery is tried again after this, doubling each time


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    broker_url: str
    artifact_root: Path | str  # a folder, or an object-store URL such as s3://bucket/prefix (see artifact_root)
    data_root: Path
    sd_model: str
    queue: str  # the default queue of every job kind not named in kind_queues
    kind_queues: dict[str, str]  # kind -> its default queue (GENQ_KIND_QUEUES="interpolate=cpu,sample-vae=cpu")
    worker_queues: tuple[str, ...]  # what a worker consumes (GENQ_WORKER_QUEUES; default: every queue above)
    worker_name: str  # this worker's name in the registry (GENQ_WORKER_NAME; the supervisor sets host:gpu0)
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
    sd_max_batch: int  # images one worker generates in one UNet batch across compatible sd jobs; 1: no batching
    sd_compile: bool  # torch.compile the UNet once per worker and shape (CUDA)
    preload: str  # a model a worker loads before it takes jobs ("" none)
    max_sweep: int  # a sweep of more jobs is refused unless confirmed (--yes)
    user: str  # the owner recorded on jobs submitted with the store's own access (GENQ_USER; default "local")
    webhook_allow: tuple[str, ...]  # hosts (host or host:port) a webhook may be sent to; empty: none
    webhook_timeout_s: float
    webhook_backoff_s: float

    def queue_for(self, kind: str) -> str:
        """The queue a job of `kind` goes to when its submit names none."""
        return self.kind_queues.get(kind, self.queue)

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


# -- the password inside a URL, `scheme://[user][:password]@host/...` (load_settings, `client up`) -----------
def url_password(url: str) -> str | None:
    """The URL's password, percent-decoded; None when it names none."""
    password = urlsplit(url).password
    return None if password is None else unquote(password)


def url_with_password(url: str, password: str) -> str:
    """`scheme://host/...` -> `scheme://:password@host/...` (the password percent-encoded; a user name
    the URL gives is kept before it). A URL that already names a password is returned as is."""
    parts = urlsplit(url)
    if parts.password is not None:
        return url
    user, _, hostport = parts.netloc.rpartition("@")  # without "@": no user, the whole netloc
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{hostport}"))


def url_without_password(url: str) -> str:
    """The URL without its credentials (`user:password@` goes, user name included): as a client that
    sends none would use it."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def recorded_broker_url(home: Path) -> str | None:
    """The URL `client up` started the home's embedded broker at (GENQ_HOME/broker/url), when it
    recorded one: a `redis://` URL of this machine without credentials; anything else there is ignored."""
    try:
        url = (home / BROKER_URL_FILE).read_text().strip()
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- a port that is no number is a ValueError here, not in `client up`
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if (parts.scheme != "redis" or parts.hostname not in LOCAL_BROKER_HOSTS or "@" in parts.netloc
            or any(c.isspace() for c in url)):
        return None
    return url


def _broker_url(env: dict[str, str], home: Path) -> str:
    """GENQ_BROKER_URL, else the URL `client up` recorded for this home, else the default; a local URL
    without credentials gets the password of the broker `client up` started for this home
    (GENQ_HOME/broker/password), when there is one."""
    url = env.get("GENQ_BROKER_URL") or recorded_broker_url(home) or DEFAULT_BROKER_URL
    parts = urlsplit(url)
    if parts.scheme != "redis" or parts.hostname not in LOCAL_BROKER_HOSTS or "@" in parts.netloc:
        return url
    try:
        password = (home / BROKER_PASSWORD_FILE).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return url
    if not password:
        return url
    return url_with_password(url, password)


MAX_SECONDS = 366 * 24 * 3600  # no interval, lease, timeout or back-off of genq is longer than a year
MAX_COUNT = 10**12  # the largest count or budget a setting takes


def _number(env: dict[str, str], name: str, default: float, cast=float, low: float = 0, high: float | None = None,
            *, low_open: bool = False, below: tuple[str, float] | None = None):
    """The variable `name` as `cast` (float: seconds, int: a count), else `default`: finite, from `low`
    (above it with `low_open`) to `high` (MAX_SECONDS or MAX_COUNT when None), and below the value of
    the setting `below` names. ValueError otherwise, one line naming the variable."""
    raw = env.get(name)
    given = raw is not None and raw.strip() != ""
    if high is None:
        high = MAX_SECONDS if cast is float else MAX_COUNT
    try:
        value = cast(raw) if given else cast(default)
    except ValueError:
        value = None
    if cast is float:
        wanted = f"a finite number of seconds {'>' if low_open else '>='} {low:g}"
        wanted += f" and below {below[0]} ({below[1]:g})" if below else f" and at most {high:,.0f}"
    else:
        wanted = f"an integer from {low:,} to {high:,}"
    if (value is None or (cast is float and not math.isfinite(value)) or value < low or (low_open and value == low)
            or value > high or (below is not None and value >= below[1])):
        got = repr(raw) if given else f"{default:g} (its default)"
        raise ValueError(f"{name}: must be {wanted}, got {got}")
    return value


def _lease(env: dict[str, str]) -> float:
    """GENQ_LEASE, else GENQ_STALE_AFTER (its earlier name), else the default."""
    return _number(env, "GENQ_LEASE", _number(env, "GENQ_STALE_AFTER", DEFAULT_LEASE_S, low_open=True), low_open=True)


def check_queue_name(name: str, what: str = "queue") -> str:
    if not QUEUE_NAME.match(name):
        raise ValueError(f"{what} {name!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


def _queue_list(raw: str, name: str) -> tuple[str, ...]:
    queues = [q.strip() for q in raw.split(",") if q.strip()]
    for queue in queues:
        check_queue_name(queue, f"{name}: queue")
    return tuple(dict.fromkeys(queues))


def _kind_queues(raw: str) -> dict[str, str]:
    mapping = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        kind, eq, queue = item.partition("=")
        if not eq or not kind.strip():
            raise ValueError(f"GENQ_KIND_QUEUES takes kind=queue pairs separated by commas, got {item!r}")
        mapping[kind.strip()] = check_queue_name(queue.strip(), "GENQ_KIND_QUEUES: queue")
    return mapping


def _flag(env: dict[str, str], name: str) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{name} must be 1 or 0, got {raw!r}")


URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
FOLDER_SCHEMES = frozenset({"file", "local"})


def artifact_root(raw: str) -> Path | str:
    """GENQ_ARTIFACT_ROOT: an absolute folder, or an object-store URL (`s3://bucket/prefix`; any scheme
    fsspec knows: gs://, az://, ...) kept as text without a trailing slash. The store's credentials and
    endpoint come from its own standard variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...)."""
    match = URL_SCHEME.match(raw)
    if match is None:
        return Path(raw).expanduser().absolute()
    scheme = match.group(1).lower()
    if scheme in FOLDER_SCHEMES:
        return Path(unquote(urlsplit(raw).path)).expanduser().absolute()
    from fsspec.registry import known_implementations

    if scheme not in known_implementations:
        raise ValueError(f"GENQ_ARTIFACT_ROOT: the scheme {scheme!r} is not an object store genq knows "
                         f"(use a folder, or a URL such as s3://bucket/prefix), got {redact_url(raw)!r}")
    bucket, _, prefix = raw[match.end():].partition("/")
    if not bucket:
        raise ValueError(f"GENQ_ARTIFACT_ROOT: {redact_url(raw)!r} names no bucket (use {scheme}://bucket/prefix)")
    parts = [part for part in prefix.split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise ValueError(f"GENQ_ARTIFACT_ROOT: the prefix of {redact_url(raw)!r} must not contain '.' or '..' parts")
    return f"{scheme}://{'/'.join([bucket, *parts])}"


def default_home(env: dict[str, str]) -> Path:
    """~/.genq (the HOME of `env` when it names one)."""
    return Path(env.get("HOME") or Path.home()) / HOME_FOLDER


LOCAL_USER = "local"  # the owner of jobs submitted with the store's own access when GENQ_USER is unset
USER_NAME = re.compile(r"^[a-z][a-z0-9._-]{0,63}$")


def _user(env: dict[str, str]) -> str:
    name = env.get("GENQ_USER") or LOCAL_USER
    if not USER_NAME.match(name):
        raise ValueError(f"GENQ_USER: {name!r} is not a user name (1-64 characters: lowercase letters, digits, "
                         "'.', '_' or '-', starting with a letter)")
    return name


def _webhook_allow(raw: str) -> tuple[str, ...]:
    """GENQ_WEBHOOK_ALLOW: hosts, optionally host:port, separated by commas; lowercased."""
    hosts = [host.strip().lower() for host in raw.split(",") if host.strip()]
    for host in hosts:
        if any(c.isspace() or c in "/@?#" for c in host):
            raise ValueError(f"GENQ_WEBHOOK_ALLOW takes hosts (host or host:port) separated by commas, got {host!r}")
    return tuple(dict.fromkeys(hosts))


def load_settings(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    home = Path(env.get("GENQ_HOME") or default_home(env)).expanduser().absolute()
    database_url = env.get("GENQ_DATABASE_URL") or f"sqlite:///{home / STORE_FILE}"
    queue = check_queue_name(env.get("GENQ_QUEUE") or DEFAULT_QUEUE, "GENQ_QUEUE:")
    kind_queues = _kind_queues(env.get("GENQ_KIND_QUEUES") or "")
    worker_queues = (_queue_list(env.get("GENQ_WORKER_QUEUES") or "", "GENQ_WORKER_QUEUES")
                     or tuple(dict.fromkeys([queue, *kind_queues.values()])))
    return Settings(
        home=home,
        database_url=database_url,
        broker_url=_broker_url(env, home),
        artifact_root=artifact_root(env.get("GENQ_ARTIFACT_ROOT") or str(home / "artifacts")),
        data_root=Path(env.get("GENQ_DATA_ROOT") or home / "data").expanduser().absolute(),
        sd_model=env.get("GENQ_SD_MODEL") or DEFAULT_SD_MODEL,
        queue=queue,
        kind_queues=kind_queues,
        worker_queues=worker_queues,
        worker_name=env.get("GENQ_WORKER_NAME") or f"{socket.gethostname()}:{os.getpid()}",
        visibility_timeout_s=_number(env, "GENQ_VISIBILITY_TIMEOUT", DEFAULT_VISIBILITY_TIMEOUT_S, int, 1, MAX_SECONDS),
        heartbeat_interval_s=_number(env, "GENQ_HEARTBEAT_INTERVAL", DEFAULT_HEARTBEAT_INTERVAL_S, low_open=True,
                                     below=("GENQ_LEASE", _lease(env))),
        lease_s=_lease(env),
        reconcile_interval_s=_number(env, "GENQ_RECONCILE_INTERVAL", DEFAULT_RECONCILE_INTERVAL_S, low_open=True),
        resend_after_s=_number(env, "GENQ_RESEND_AFTER", DEFAULT_RESEND_AFTER_S, low_open=True),
        retry_for_s=_number(env, "GENQ_RETRY_FOR", DEFAULT_RETRY_FOR_S),
        retry_backoff_s=_number(env, "GENQ_RETRY_BACKOFF", DEFAULT_RETRY_BACKOFF_S),
        max_attempts=_number(env, "GENQ_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS, int, 1, 1_000),
        model_cache_size=_number(env, "GENQ_MODEL_CACHE_SIZE", DEFAULT_MODEL_CACHE_SIZE, int, 1, 1_000),
        device=env.get("GENQ_DEVICE") or "auto",
        torch_threads=_number(env, "GENQ_TORCH_THREADS", 0, int, 0, 4_096),
        sd_max_pixels=_number(env, "GENQ_SD_MAX_PIXELS", DEFAULT_SD_MAX_PIXELS, int, 1),
        sd_max_pixel_steps=_number(env, "GENQ_SD_MAX_PIXEL_STEPS", DEFAULT_SD_MAX_PIXEL_STEPS, int, 1),
        model_roots=tuple(Path(p).expanduser().absolute() for p in (env.get("GENQ_MODEL_ROOTS") or "").split(os.pathsep) if p),
        sd_max_batch=_number(env, "GENQ_SD_MAX_BATCH", DEFAULT_SD_MAX_BATCH, int, 1, 1_024),
        sd_compile=_flag(env, "GENQ_SD_COMPILE"),
        preload=env.get("GENQ_PRELOAD") or "",
        max_sweep=_number(env, "GENQ_MAX_SWEEP", DEFAULT_MAX_SWEEP, int, 1, MAX_SWEEP_CEILING),
        user=_user(env),
        webhook_allow=_webhook_allow(env.get("GENQ_WEBHOOK_ALLOW") or ""),
        webhook_timeout_s=_number(env, "GENQ_WEBHOOK_TIMEOUT", DEFAULT_WEBHOOK_TIMEOUT_S, low_open=True, high=300),
        webhook_backoff_s=_number(env, "GENQ_WEBHOOK_BACKOFF", DEFAULT_WEBHOOK_BACKOFF_S, low_open=True, high=3600),
    )
