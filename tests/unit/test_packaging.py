"""genq's own modules import each other as genq.*: a bare `import core` would find another distribution's."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PARTS = ("core", "client", "worker", "migrations")
SOURCE_FOLDERS = ("src", "tests", "bench")


def bare_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [f"{path.name}:{node.lineno}: {name}" for name in names if name.split(".")[0] in PARTS]
    return found


def test_no_module_imports_core_client_worker_or_migrations_bare():
    files = [path for folder in SOURCE_FOLDERS for path in (REPO / folder).rglob("*.py")]
    assert len(files) > 50
    offenders = [line for path in files for line in bare_imports(path)]
    assert offenders == [], "import these as genq.<part>:\n" + "\n".join(offenders)


def test_the_check_sees_a_bare_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from core.config import load_settings\nimport worker.app\nfrom genq.core import params\n")
    assert [line.split(": ")[1] for line in bare_imports(sample)] == ["core.config", "worker.app"]


def test_every_package_folder_is_a_regular_package():
    """Sub-folders with Python code carry an __init__.py, so they behave alike installed and in the tree."""
    missing = [str(folder.relative_to(REPO)) for folder in [REPO / "src" / "genq", *(REPO / "src" / "genq").rglob("*")]
               if folder.is_dir() and folder.name != "__pycache__" and any(folder.glob("*.py"))
               and not (folder / "__init__.py").exists()]
    assert missing == []
