"""The built wheel holds one `genq` package with every module, and works outside the repository."""
from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from genq.core.store.db import head_revision
from tests.unit.test_packaging import PARTS, REPO

IGNORED = shutil.ignore_patterns(".git", ".venv*", ".genq", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache")

PACKAGED = (".py", ".mako", ".ini", ".html", ".js", ".css")  # modules and their package data (the dashboard's templates)

IMPORT_EVERYTHING = r"""
import importlib, pathlib, sys
site = pathlib.Path(sys.argv[1])
names = sorted(".".join(p.relative_to(site).with_suffix("").parts).removesuffix(".__init__")
               for p in (site / "genq").rglob("*.py"))
for name in names:
    if name == "genq.migrations.env":
        continue  # runs only inside alembic; exercised by the upgrade below
    module = importlib.import_module(name)
    assert pathlib.Path(module.__file__).is_relative_to(site), (name, module.__file__)
from genq.core.store.db import upgrade
print(upgrade("sqlite:///" + sys.argv[2]))
print(len(names), "modules")
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    shutil.copytree(REPO, source, ignore=IGNORED)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(work / "out"),
                    str(source)], check=True, capture_output=True, timeout=300)
    (built,) = (work / "out").glob("genq-*.whl")
    return built


def source_files(part: str) -> set[str]:
    root = REPO / "src" / "genq" / part
    return {f"genq/{part}/{p.relative_to(root)}" for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix in PACKAGED}


def test_the_wheel_installs_only_genq(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"genq", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    expected = {"genq/__init__.py"}.union(*(source_files(part) for part in PARTS))
    assert expected <= set(names), sorted(expected - set(names))
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for script in ("client = genq.client.cli:main", "genq = genq.client.cli:main", "genq-worker = genq.worker.__main__:main"):
        assert script in entry_points


def test_every_module_imports_from_the_wheel_outside_the_repository(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    # -S: no .pth files, so the editable install of this checkout cannot answer for genq.
    dependencies = sysconfig.get_paths()["purelib"]
    result = subprocess.run([sys.executable, "-S", "-c", IMPORT_EVERYTHING, str(site), str(tmp_path / "db.sqlite3")],
                            cwd=outside, env={"PYTHONPATH": f"{site}:{dependencies}", "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    head = head_revision(f"sqlite:///{tmp_path / 'head.sqlite3'}")
    assert "modules" in result.stdout and f"(None, '{head}')" in result.stdout, result.stdout
