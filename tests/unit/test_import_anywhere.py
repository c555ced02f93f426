"""`from genq import Client` works from any folder, whatever sits beside the caller: above all from the
parent of a clone, which `git clone` names genq (a folder without __init__.py that Python would
otherwise take for a namespace package named genq, hiding the installed one)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import genq


def test_genq_imports_beside_a_folder_named_genq(tmp_path):
    clone = tmp_path / "genq"  # what `git clone .../genq.git` leaves: the repository's own folders inside
    for part in ("core", "client", "worker", "genq"):
        (clone / part).mkdir(parents=True)
    (clone / "README.md").write_text("a clone\n")
    for name in ("core", "client", "worker"):  # and other folders whose names genq's parts have
        (tmp_path / name).mkdir()

    result = subprocess.run([sys.executable, "-c", "import genq; from genq import Client; print(genq.__file__)"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, (
        f"{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else result.stdout}\n"
        "(the src layout keeps the package out of the repository's top folder: README, Layout)")
    imported = Path(result.stdout.strip()).resolve()
    assert imported == Path(genq.__file__).resolve(), f"imported {imported}, not the installed genq"
