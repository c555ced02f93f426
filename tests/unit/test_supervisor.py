"""genq-worker's supervisor: which workers it plans, how it counts GPUs, its restart back-off, and
its loop over real child processes (a stand-in child script: the real one needs the whole app,
see tests/integration/test_supervisor.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from genq.worker.supervisor import (DEFAULT_GRACE_S, EXIT_CONFIG, MAX_RESTART_DELAY_S, MIN_RESTART_DELAY_S,
                                    STABLE_AFTER_S, GpuInventory, UsageError, cuda_visible, find_gpus, plan,
                                    restart_delay, threads_per_worker)

BIN = Path(sys.executable).parent
TWO_GPUS = GpuInventory(("0", "1"), "nvidia-smi -L")
NO_GPU = GpuInventory((), "nvidia-smi and /proc/driver/nvidia/gpus")


def planned(env: dict[str, str] | None = None, inventory: GpuInventory = TWO_GPUS, cores: int = 8, **options):
    args = {"gpus": None, "processes": None, "queues": None, "preload": None, **options}
    return plan(**args, env=env or {}, find=lambda: inventory, cores=cores, host="box")


def names(slots) -> list[str]:
    return [slot.name for slot in slots]


# -- the plan -----------------------------------------------------------------------------------------------

def test_by_default_every_gpu_gets_one_worker_pinned_to_it_by_index():
    slots = planned()
    assert names(slots) == ["box:gpu0", "box:gpu1"]
    assert slots[1].env == {"CUDA_VISIBLE_DEVICES": "1", "GENQ_DEVICE": "cuda", "GENQ_WORKER_NAME": "box:gpu1",
                            "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}  # CUDA numbers the GPUs as nvidia-smi does


def test_without_a_gpu_or_with_genq_device_cpu_the_default_is_one_cpu_worker_with_every_core():
    for slots in (planned(inventory=NO_GPU), planned(env={"GENQ_DEVICE": "cpu"}, inventory=TWO_GPUS)):
        assert names(slots) == ["box:cpu0"]
        assert slots[0].env == {"CUDA_VISIBLE_DEVICES": "", "GENQ_DEVICE": "cpu", "GENQ_WORKER_NAME": "box:cpu0",
                                "GENQ_TORCH_THREADS": "8"}


def test_gpus_n_takes_the_first_n_and_a_list_takes_those_indices():
    assert names(planned(gpus="all")) == ["box:gpu0", "box:gpu1"]
    assert names(planned(gpus="1")) == ["box:gpu0"]
    four = GpuInventory(("0", "1", "2", "3"), "nvidia-smi -L")
    assert names(planned(gpus="0,2", inventory=four)) == ["box:gpu0", "box:gpu2"]
    assert names(planned(gpus=" 3, ", inventory=four)) == ["box:gpu3"]  # one index alone: the trailing comma
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in planned(gpus="2,1", inventory=four)] == ["2", "1"]


@pytest.mark.parametrize("options, inventory, message", [
    ({"gpus": "0,5"}, TWO_GPUS, "--gpus 0,5: there is no GPU 5; this machine has 2 GPUs: 0,1 (from nvidia-smi -L)"),
    ({"gpus": "3"}, TWO_GPUS, "--gpus 3: this machine has 2 GPUs: 0,1 (from nvidia-smi -L)"),
    ({"gpus": "0"}, TWO_GPUS, "--gpus 0: a count must be at least 1"),
    ({"gpus": "1,1"}, TWO_GPUS, "GPU 1 is named twice"),
    ({"gpus": "first"}, TWO_GPUS, "--gpus takes all, a count (2) or GPU indices"),
    ({"gpus": "all"}, NO_GPU, "--gpus all: this machine has no GPU (none in nvidia-smi and /proc/driver/nvidia/gpus)"),
    ({"gpus": "1", "processes": 2}, TWO_GPUS, "--gpus and --processes exclude each other"),
    ({"processes": 0}, TWO_GPUS, "--processes must be at least 1"),
    ({"queues": "gpu,bad queue"}, TWO_GPUS, "--queues: queue 'bad queue' must be"),
    ({"queues": " , "}, TWO_GPUS, "--queues takes queue names"),
])
def test_what_cannot_be_run_as_asked_is_a_one_line_usage_error(options, inventory, message):
    with pytest.raises(UsageError) as caught:
        planned(inventory=inventory, **options)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_processes_n_splits_the_cores_between_n_cpu_workers_and_never_looks_for_gpus():
    def no_lookup():
        raise AssertionError("GPUs looked up for CPU workers")

    slots = plan(gpus=None, processes=3, queues=None, preload=None, env={}, find=no_lookup, cores=8, host="box")
    assert names(slots) == ["box:cpu0", "box:cpu1", "box:cpu2"]
    assert {s.env["GENQ_TORCH_THREADS"] for s in slots} == {"2"}
    assert {s.env["CUDA_VISIBLE_DEVICES"] for s in slots} == {""} and {s.env["GENQ_DEVICE"] for s in slots} == {"cpu"}
    assert threads_per_worker(2, 2) == 1 and threads_per_worker(2, 5) == 1 and threads_per_worker(16, 3) == 5


def test_the_users_torch_threads_worker_name_and_device_order_are_kept():
    slots = planned(env={"GENQ_TORCH_THREADS": "3", "GENQ_WORKER_NAME": "node7"}, processes=2)
    assert names(slots) == ["node7:cpu0", "node7:cpu1"]  # GENQ_WORKER_NAME names the machine
    assert all("GENQ_TORCH_THREADS" not in s.env for s in slots)  # the child inherits the user's 3
    assert all("CUDA_DEVICE_ORDER" not in s.env for s in planned(env={"CUDA_DEVICE_ORDER": "FASTEST_FIRST"}))


def test_queues_and_preload_reach_every_worker():
    for slot in planned(queues="gpu, sd ,gpu", preload="/models/tiny") + planned(processes=2, queues="cpu"):
        assert slot.env["GENQ_WORKER_QUEUES"] in ("gpu,sd", "cpu")
    assert {s.env["GENQ_PRELOAD"] for s in planned(queues="gpu", preload="/models/tiny")} == {"/models/tiny"}
    assert all("GENQ_PRELOAD" not in s.env and "GENQ_WORKER_QUEUES" not in s.env for s in planned())


# -- counting GPUs without CUDA ---------------------------------------------------------------------------

NVIDIA_SMI_L = """GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1b2c3d4e-0000-1111-2222-333344445555)
GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-2b2c3d4e-0000-1111-2222-333344445555)
  MIG 3g.40gb     Device  0: (UUID: MIG-5c6d7e8f-0000-1111-2222-333344445555)
GPU 2: NVIDIA H100 80GB HBM3 (UUID: GPU-3b2c3d4e-0000-1111-2222-333344445555)
"""


def test_gpus_are_read_from_cuda_visible_devices_then_nvidia_smi_then_the_drivers_proc_folder(tmp_path):
    proc = tmp_path / "gpus"
    for bus in ("0000:19:00.0", "0000:3b:00.0"):
        (proc / bus).mkdir(parents=True)
    assert find_gpus({}, listing=lambda: NVIDIA_SMI_L, proc_gpus=proc) == GpuInventory(("0", "1", "2"), "nvidia-smi -L")
    assert find_gpus({}, listing=lambda: None, proc_gpus=proc).ids == ("0", "1")
    assert find_gpus({}, listing=lambda: None, proc_gpus=tmp_path / "none").ids == ()
    pinned = find_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}, listing=lambda: NVIDIA_SMI_L, proc_gpus=proc)
    assert pinned.ids == ("2", "3") and pinned.pinned
    # the user's list keeps its meaning: no reordering, and only its GPUs can be asked for
    slots = planned(gpus="3,", inventory=pinned)
    assert names(slots) == ["box:gpu3"] and "CUDA_DEVICE_ORDER" not in slots[0].env
    with pytest.raises(UsageError, match="no GPU 0"):
        planned(gpus="0,", inventory=pinned)


def test_cuda_visible_devices_is_read_as_cuda_reads_it():
    assert cuda_visible("") == () and cuda_visible("-1") == () and cuda_visible("NoDevFiles") == ()
    assert cuda_visible("0, 2") == ("0", "2")
    assert cuda_visible("1,-1,2") == ("1",)  # CUDA stops at the first invalid entry
    assert cuda_visible("GPU-1b2c3d4e-0000,MIG-5c6d/1/0") == ("GPU-1b2c3d4e-0000", "MIG-5c6d/1/0")


# -- restart back-off ---------------------------------------------------------------------------------------

def test_a_child_that_keeps_dying_waits_1_s_then_doubling_to_60_s_and_1_s_again_once_it_stayed_up():
    delays, previous = [], None
    for _ in range(9):
        previous = restart_delay(previous, uptime_s=2.0)
        delays.append(previous)
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert (MIN_RESTART_DELAY_S, MAX_RESTART_DELAY_S) == (1.0, 60.0)
    assert restart_delay(60.0, uptime_s=STABLE_AFTER_S) == MIN_RESTART_DELAY_S
    assert restart_delay(8.0, uptime_s=STABLE_AFTER_S - 1) == 16.0


# -- the command --------------------------------------------------------------------------------------------

def test_importing_the_supervisor_and_the_entry_point_imports_neither_torch_nor_celery():
    code = ("import sys, genq.worker.__main__, genq.worker.supervisor; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'celery', 'kombu', 'diffusers'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def run_worker_command(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "genq-worker"), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": "0,1", **(env or {})})


@pytest.mark.parametrize("args, message", [
    (["--gpus", "0,7"], "genq-worker: --gpus 0,7: there is no GPU 7; this machine has 2 GPUs: 0,1 (from CUDA_VISIBLE_DEVICES)"),
    (["--gpus", "4"], "genq-worker: --gpus 4: this machine has 2 GPUs"),
    (["--gpus", "1", "--processes", "2"], "genq-worker: --gpus and --processes exclude each other"),
    (["--processes", "two"], "genq-worker: Invalid value for '--processes'"),
])
def test_genq_worker_refuses_bad_options_in_one_line_with_exit_2(args, message):
    result = run_worker_command(*args)
    assert result.returncode == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr


def test_genq_worker_refuses_a_bad_setting_once_with_exit_1_instead_of_restarting_workers():
    result = run_worker_command("--processes", "2", env={"GENQ_LEASE": "soon"})
    assert (result.returncode, result.stderr) == (
        1, "genq-worker: GENQ_LEASE: must be a finite number of seconds > 0 and at most 31,622,400, got 'soon'\n")


def test_genq_worker_help_explains_the_options_and_the_signals():
    for command in ([str(BIN / "genq-worker"), "--help"], [sys.executable, "-m", "genq.worker", "-h"]):
        out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout
        for needle in ("--gpus", "--processes", "--queues", "--preload", "--grace", "SIGTERM", "celery worker",
                       "HOST:gpuI", f"default: {DEFAULT_GRACE_S}"):
            assert needle in out, needle


# -- the loop, over stand-in children -----------------------------------------------------------------------

FAKE_CHILD = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path

    folder = Path(os.environ["FAKE_DIR"])
    name = os.environ["GENQ_WORKER_NAME"].replace(":", "_")
    starts = folder / f"{name}.starts"
    first = not starts.exists()
    with open(starts, "a") as out:
        out.write(f"{os.getpid()}\\n")
    behaviour = os.environ.get("FAKE_FIRST" if first else "FAKE_LATER", "run")

    def on_term(*_):
        (folder / f"{name}.{os.getpid()}.term").write_text("")
        if behaviour != "ignore-term":
            sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    if behaviour.startswith("exit"):
        sys.exit(int(behaviour[4:]))
    while True:
        time.sleep(0.05)
""")
SUPERVISE = textwrap.dedent("""
    import logging, os, sys
    from genq.worker.supervisor import Slot, Supervisor

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    slots = [Slot(name, {"GENQ_WORKER_NAME": name}) for name in sys.argv[2].split(",")]
    sys.exit(Supervisor(slots, [sys.executable, sys.argv[1]], os.environ, grace_s=float(sys.argv[3])).run())
""")


class Fake:
    def __init__(self, folder: Path, names: str = "box:cpu0,box:cpu1", grace_s: float = 30, **behaviour: str):
        self.folder = folder
        (folder / "child.py").write_text(FAKE_CHILD)
        self.log = folder / "supervisor.log"
        env = {**os.environ, "FAKE_DIR": str(folder), **{f"FAKE_{k.upper()}": v for k, v in behaviour.items()}}
        with open(self.log, "wb") as out:
            self.supervisor = subprocess.Popen([sys.executable, "-c", SUPERVISE, str(folder / "child.py"), names,
                                                str(grace_s)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                               start_new_session=True)

    def pids(self, name: str) -> list[int]:
        path = self.folder / f"{name.replace(':', '_')}.starts"
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []

    def got_sigterm(self, name: str, pid: int) -> bool:
        return (self.folder / f"{name.replace(':', '_')}.{pid}.term").exists()

    def wait(self, predicate, what: str, timeout: float = 20):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.log.read_text()}")
            time.sleep(0.05)

    def close(self) -> None:
        try:
            os.killpg(self.supervisor.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.supervisor.wait()


@pytest.fixture
def fakes(tmp_path):
    made = []

    def make(**kwargs) -> Fake:
        folder = tmp_path / f"fake{len(made)}"
        folder.mkdir()
        made.append(Fake(folder, **kwargs))
        return made[-1]

    yield make
    for fake in made:
        fake.close()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_a_child_that_dies_is_started_again_and_sigterm_stops_every_child_then_exit_0(fakes):
    # Given a supervisor of two children, the first run of each crashing with exit code 3
    fake = fakes(first="exit3")
    # Then each is started again about a second later
    for name in ("box:cpu0", "box:cpu1"):
        fake.wait(lambda: len(fake.pids(name)) == 2, f"{name} to be started again")
    log = fake.log.read_text()
    assert "box:cpu0 (pid" in log and "exited with code 3 after" in log and "starting it again in 1 s" in log
    # When the supervisor gets SIGTERM (only it, not its group)
    fake.supervisor.send_signal(signal.SIGTERM)
    # Then it forwards SIGTERM to each running child, waits for them, and exits 0
    assert fake.supervisor.wait(timeout=20) == 0
    for name in ("box:cpu0", "box:cpu1"):
        assert fake.got_sigterm(name, fake.pids(name)[-1]) and gone(fake.pids(name)[-1])
    assert len(fake.pids("box:cpu0")) == 2  # none started after the stop
    assert "SIGTERM: stopping the workers" in fake.log.read_text()


def test_a_child_killed_by_a_signal_is_logged_so_and_started_again(fakes):
    fake = fakes(names="box:gpu0")
    fake.wait(lambda: fake.pids("box:gpu0"), "the child to start")
    time.sleep(0.3)  # its SIGTERM handler is installed
    os.kill(fake.pids("box:gpu0")[0], signal.SIGKILL)
    fake.wait(lambda: len(fake.pids("box:gpu0")) == 2, "the child to be started again")
    assert "box:gpu0 (pid" in fake.log.read_text() and "was killed by SIGKILL after" in fake.log.read_text()


def test_a_child_with_a_configuration_error_is_not_restarted_the_others_stop_and_the_exit_is_1(fakes):
    fake = fakes(names="box:cpu0", first=f"exit{EXIT_CONFIG}")
    assert fake.supervisor.wait(timeout=20) == 1
    assert len(fake.pids("box:cpu0")) == 1
    assert "would fail the same way" in fake.log.read_text()


def test_children_still_running_after_the_grace_period_are_killed_and_the_exit_is_still_0(fakes):
    fake = fakes(names="box:cpu0", grace_s=1, first="ignore-term")
    fake.wait(lambda: fake.pids("box:cpu0"), "the child to start")
    time.sleep(0.3)
    started = time.monotonic()
    fake.supervisor.send_signal(signal.SIGTERM)
    assert fake.supervisor.wait(timeout=20) == 0
    assert 0.9 < time.monotonic() - started < 10
    pid = fake.pids("box:cpu0")[0]
    assert fake.got_sigterm("box:cpu0", pid) and gone(pid)
    assert "killing them" in fake.log.read_text()


def test_a_second_signal_kills_the_children_at_once(fakes):
    fake = fakes(names="box:cpu0", grace_s=DEFAULT_GRACE_S, first="ignore-term")
    fake.wait(lambda: fake.pids("box:cpu0"), "the child to start")
    time.sleep(0.3)
    fake.supervisor.send_signal(signal.SIGINT)
    fake.wait(lambda: fake.got_sigterm("box:cpu0", fake.pids("box:cpu0")[0]), "SIGTERM to reach the child")
    fake.supervisor.send_signal(signal.SIGINT)
    assert fake.supervisor.wait(timeout=20) == 0
    assert gone(fake.pids("box:cpu0")[0]) and "SIGINT again: killing the workers" in fake.log.read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_children_of_a_supervisor_killed_outright_get_sigterm_from_the_kernel(fakes):
    fake = fakes(names="box:cpu0")
    fake.wait(lambda: fake.pids("box:cpu0"), "the child to start")
    time.sleep(0.3)
    fake.supervisor.send_signal(signal.SIGKILL)  # the supervisor only: its child stays in the group
    fake.supervisor.wait()
    pid = fake.pids("box:cpu0")[0]
    fake.wait(lambda: fake.got_sigterm("box:cpu0", pid), "the orphan to get SIGTERM")
    fake.wait(lambda: gone(pid), "the orphan to exit")
