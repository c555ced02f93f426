"""Install the four top-level folders as sub-packages of one `genq` package.

The folders stay at the repository root; `package_dir` maps `genq.core` to `core/` and so on.
Packages are discovered, not listed, so a new sub-package cannot be left out of the wheel.
Everything else (name, dependencies, scripts) is in pyproject.toml.
"""
from setuptools import find_namespace_packages, setup

PARTS = ("core", "client", "worker", "migrations")

packages = ["genq"] + [
    f"genq.{name}"
    for name in find_namespace_packages(include=[f"{part}*" for part in PARTS], exclude=["*__pycache__*"])
]
package_dir = {"genq": "genq", **{f"genq.{part}": part for part in PARTS}}

setup(packages=packages, package_dir=package_dir)
