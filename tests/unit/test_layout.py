"""The layout's rules, checked on the source: who may import what, where SQL lives, where kinds are named.

- client/ and genq/api.py (front doors) import nothing from genq.worker: the engine, the broker and
  the read model are in core/.
- The dashboard (client/ui/) and the server (client/server/) hold no SQL: they read through the read
  model and change jobs through the engine.
- Outside core/kinds/ and the kinds' run modules (core/vae/, core/sd/), no code names a kind or one
  of its artifacts or metrics (docstrings may, as examples).
- In core/, only broker.py and retry.py import Celery or kombu: the engine sends wake-ups through
  broker.py, and the kinds and their run modules never see the broker.
- The test-only fault points are not imported by the worker's or the CLI's modules.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from genq.core.kinds import KIND_CLASSES

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "genq"
FRONT_DOORS = [*sorted((PACKAGE / "client").rglob("*.py")), PACKAGE / "api.py"]
KIND_HOMES = [PACKAGE / "core" / "kinds", PACKAGE / "core" / "vae", PACKAGE / "core" / "sd"]
SOURCE = [path for path in sorted(PACKAGE.rglob("*.py")) if "migrations" not in path.relative_to(PACKAGE).parts]  # history may name old kinds


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def docstring_nodes(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def strings_in_code(path: Path) -> list[str]:
    """String constants of a module, its docstrings left out."""
    tree = ast.parse(path.read_text(), str(path))
    skip = docstring_nodes(tree)
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip]


def kind_words() -> set[str]:
    """Each kind's name, main picture and report figures; the metric names its run modules record."""
    words = set()
    for cls in KIND_CLASSES:
        words.add(cls.kind)
        words.update(name for name in (cls.main_picture, *cls.report_figures) if name)
    words.update({"train_loss_per_image", "test_loss_per_image"})
    return words


def test_front_doors_import_nothing_from_the_worker_package():
    offenders = [f"{path.relative_to(REPO)}: {module}" for path in FRONT_DOORS for module in imported_modules(path)
                 if module == "genq.worker" or module.startswith("genq.worker.")]
    assert offenders == []


def test_the_dashboard_and_the_server_hold_no_sql():
    paths = [*sorted((PACKAGE / "client" / "ui").rglob("*.py")), *sorted((PACKAGE / "client" / "server").rglob("*.py"))]
    offenders = [f"{path.relative_to(REPO)}: {module}" for path in paths
                 for module in imported_modules(path) if module.split(".")[0] == "sqlalchemy"]
    assert offenders == []


def test_no_code_outside_the_kinds_names_a_kind_or_its_artifacts():
    words = kind_words()
    offenders = []
    for path in SOURCE:
        if any(path.is_relative_to(home) for home in KIND_HOMES):
            continue
        offenders += [f"{path.relative_to(REPO)}: {text!r}" for text in strings_in_code(path) if text in words]
    assert offenders == []


def test_the_worker_and_the_cli_do_not_import_the_test_fault_points():
    probe = ("import sys, genq.worker.tasks, genq.worker.runner, genq.client.cli, genq.api\n"
             "print('genq.core.fault_points' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_in_core_only_the_broker_and_retry_modules_import_celery_or_kombu():
    offenders = [f"{path.relative_to(REPO)}: {module}" for path in sorted((PACKAGE / "core").rglob("*.py"))
                 if path.name not in ("broker.py", "retry.py") or path.parent != PACKAGE / "core"
                 for module in imported_modules(path) if module.split(".")[0] in ("celery", "kombu")]
    assert offenders == []
