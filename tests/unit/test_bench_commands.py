"""Every benchmark starts as documented: `python -m bench.NAME` from the repository root.

The commands are read from BENCHMARKS.md, README.md and bench/device_check.sh; each bench module with a
`__main__` block must be named there at least once, every module named there must exist, and each one
must answer `--help` (quickly: without importing torch, whose import alone takes seconds)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = ("BENCHMARKS.md", "README.md", "bench/device_check.sh")
COMMAND = re.compile(r"python3? -m bench\.([a-z_]+)")
SCRIPT_FORM = re.compile(r"python3?\s+(?:\./)?bench/[\w/]*\.py")  # as a script, bench/ is sys.path[0]
HEAVY = ("torch", "diffusers", "transformers")


def documented_modules() -> dict[str, list[str]]:
    """Module name -> the documents naming it as `python -m bench.NAME`."""
    found: dict[str, list[str]] = {}
    for document in DOCUMENTS:
        for name in COMMAND.findall((REPO / document).read_text()):
            found.setdefault(name, []).append(document)
    return found


def runnable_modules() -> set[str]:
    """The bench modules meant to be run: those with a `__main__` block (not bench.soak_audit, a library)."""
    return {path.stem for path in (REPO / "bench").glob("*.py")
            if path.stem != "__init__" and 'if __name__ == "__main__":' in path.read_text()}


def test_bench_is_a_regular_package():
    """So `-m bench.NAME` finds this folder first, never a `bench` installed elsewhere."""
    assert (REPO / "bench" / "__init__.py").exists()


def test_the_documents_name_benchmarks_only_in_their_module_form():
    texts = {name: (REPO / name).read_text() for name in DOCUMENTS}
    texts |= {f"bench/{path.name}": path.read_text() for path in (REPO / "bench").glob("*.py")}
    script_forms = [f"{name}: {match}" for name, text in texts.items() for match in SCRIPT_FORM.findall(text)]
    assert script_forms == [], "run benchmarks as `python -m bench.NAME`:\n" + "\n".join(script_forms)


def test_every_benchmark_is_documented_and_every_documented_one_exists():
    documented, runnable = documented_modules(), runnable_modules()
    assert runnable, "no bench module with a __main__ block found"
    unknown = {name: where for name, where in documented.items() if name not in runnable}
    assert unknown == {}, f"documented, but no such runnable module in bench/: {unknown}"
    undocumented = sorted(runnable - set(documented))
    assert undocumented == [], f"no `python -m bench.NAME` command in {', '.join(DOCUMENTS)} for {undocumented}"


def test_the_pattern_sees_both_forms():
    text = "`python -m bench.sd --device cuda`\npython3 -m bench.sd_queue --fleet-check\npython bench/vae_epoch.py --x"
    assert COMMAND.findall(text) == ["sd", "sd_queue"]
    assert SCRIPT_FORM.findall(text) == ["python bench/vae_epoch.py"]


@pytest.mark.timeout(150)
@pytest.mark.parametrize("module", sorted(documented_modules()))
def test_each_documented_benchmark_answers_help(module):
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", f"bench.{module}", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"python -m bench.{module} --help exited {result.returncode}:\n{result.stderr[-3000:]}"
    assert "usage:" in result.stdout.lower(), result.stdout
    # -X importtime lists every module imported, one per line on stderr: `import time: self | cumulative | name`
    imported = {line.rpartition("|")[2].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert imported, result.stderr[-3000:]
    assert not imported & set(HEAVY), f"--help imports {sorted(imported & set(HEAVY))}: parse the arguments first"
