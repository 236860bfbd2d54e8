"""
Packaging and the shared environment: setup.py declares what the code imports and agrees with the
pinned requirements files, and tools/with_env.sh runs each clone's own code from one shared venv.
"""

import ast
import importlib.metadata
import os
import runpy
import subprocess
import sys
import sysconfig
from pathlib import Path
from unittest import mock

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import pointrend_d2
from tests.helpers import REPO


@pytest.fixture(scope="module")
def setup_kwargs() -> dict:
    """The arguments setup.py passes to setuptools.setup, without building anything."""
    with mock.patch("setuptools.setup") as setup:
        runpy.run_path(str(REPO / "setup.py"))
    return setup.call_args.kwargs


def requirement_names(requirements) -> set[str]:
    return {canonicalize_name(Requirement(line).name) for line in requirements}


def pinned_requirements(file_name: str) -> dict[str, Requirement]:
    """The requirements listed in one requirements file (``-r`` includes not followed)."""
    requirements = {}
    for line in (REPO / file_name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            requirements[canonicalize_name(requirement.name)] = requirement
    return requirements


# detectron2 is installed by hand before pointrend_d2 (it is not on PyPI under its name).
OWN_OR_PREINSTALLED = {"pointrend_d2", "detectron2"}


def imported_distributions(paths) -> tuple[set[str], set[str]]:
    """
    The installed distributions that provide the third-party modules imported by ``paths``:
    (imported at module level, imported only inside functions).
    """
    providers = importlib.metadata.packages_distributions()
    module_level, in_functions = set(), set()
    for path in paths:
        tree = ast.parse(path.read_text(), str(path))
        functions = (
            f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
        )
        nested = {id(node) for function in functions for node in ast.walk(function)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            # A tool may import its sibling scripts in tools/ (on sys.path when it runs).
            siblings = (
                {p.stem for p in path.parent.glob("*.py")} if path.parent.name == "tools" else set()
            )
            for top in {name.split(".")[0] for name in names} - OWN_OR_PREINSTALLED - siblings:
                if top in sys.stdlib_module_names:
                    continue
                assert top in providers, f"{top} (imported by {path}) is not installed"
                target = in_functions if id(node) in nested else module_level
                target.update(canonicalize_name(d) for d in providers[top])
    return module_level, in_functions - module_level


def test_version_is_read_from_the_package(setup_kwargs):
    assert setup_kwargs["version"] == pointrend_d2.__version__


def test_setup_declares_what_the_code_imports(setup_kwargs):
    code = [*(REPO / "pointrend_d2").rglob("*.py"), *(REPO / "tools").glob("*.py")]
    module_level, lazy = imported_distributions(code)
    # The scan finds the imports (pointrend_d2.data.folder reads spec files with yaml).
    assert {"torch", "numpy", "pyyaml"} <= module_level
    required = requirement_names(setup_kwargs["install_requires"])
    assert not module_level - required, "imported, but not in install_requires"
    extras = set().union(*map(requirement_names, setup_kwargs["extras_require"].values()))
    assert not lazy - required - extras, "imported in a function, but not in any requirement"


def test_setup_agrees_with_the_pinned_environment(setup_kwargs):
    """Every package setup.py declares is in the pinned environment of tools/with_env.sh, at a
    version that satisfies setup.py, and the dev extra holds the test and
    lint tools of requirements-dev.txt."""
    runtime = pinned_requirements("requirements.txt")
    development = pinned_requirements("requirements-dev.txt")
    extras = setup_kwargs["extras_require"]
    assert set(extras) == {"cityscapes", "export", "dev"}
    declared = [*setup_kwargs["install_requires"], *(r for e in extras.values() for r in e)]
    for line in declared:
        requirement = Requirement(line)
        pinned = {**runtime, **development}.get(canonicalize_name(requirement.name))
        assert pinned is not None, f"{requirement.name} is not in requirements*.txt"
        for version in (s.version for s in pinned.specifier if s.operator == "=="):
            assert requirement.specifier.contains(version), (line, str(pinned))
    assert set(development) <= requirement_names(extras["dev"])
    assert requirement_names(extras["cityscapes"] + extras["export"]) <= requirement_names(
        extras["dev"]
    )


def clone_head(destination: Path) -> Path:
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(REPO), str(destination)], check=True)
    subprocess.run(["git", "-C", str(destination), "checkout", "-q", head], check=True)
    return destination


def test_two_clones_run_their_own_code_from_one_shared_venv(tmp_path):
    """
    Both clones of HEAD run tools/with_env.sh at the same time: each imports its own
    pointrend_d2, both from the venv this test runs in (same requirements, so it is reused, not
    rebuilt), and the venv has no pointrend_d2 installed that could shadow a clone.
    """
    venv = os.environ.get("VIRTUAL_ENV")
    if not venv or not (Path(venv) / ".complete").is_file() or Path(sys.prefix) != Path(venv):
        pytest.skip("not run through tools/with_env.sh: the clones would build a new venv")
    is_checkout = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--is-inside-work-tree"],
        capture_output=True,
        check=False,
    )
    if is_checkout.returncode != 0:
        pytest.skip(f"{REPO} is not a git checkout: nothing to clone")
    clones = [clone_head(tmp_path / name) for name in ("a", "b")]
    # The venv's key hashes these files: uncommitted edits to them would build another venv.
    for name in ("requirements.txt", "requirements-dev.txt", "tools/install_env.sh"):
        if (clones[0] / name).read_bytes() != (REPO / name).read_bytes():
            pytest.skip(f"{name} has uncommitted changes: the clones would build a new venv")

    # A fresh shell: nothing of the calling with_env.sh (PYTHONPATH, the venv on PATH) inherited.
    path = [p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != Path(venv) / "bin"]
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    environment["PATH"] = os.pathsep.join(path)
    # A script outside the clones: unlike `python -c` (the working directory, which with_env.sh
    # sets to the clone, comes first on sys.path), it finds the package through PYTHONPATH only.
    script = tmp_path / "where.py"
    script.write_text(
        "import os, sys, pointrend_d2\n"
        "print(os.path.dirname(pointrend_d2.__file__))\n"
        "print(sys.prefix)\n"
    )
    processes = [
        subprocess.Popen(
            ["bash", "tools/with_env.sh", "python", str(script)],
            cwd=clone,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for clone in clones
    ]
    for clone, process in zip(clones, processes, strict=True):
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
        assert "[install_env] building" not in stderr
        package_dir, prefix = stdout.splitlines()[-2:]
        assert Path(package_dir) == clone.resolve() / "pointrend_d2"
        assert Path(prefix) == Path(venv)

    site_packages = Path(sysconfig.get_paths()["purelib"])
    installed = [
        p.name
        for p in site_packages.iterdir()
        if "pointrend" in p.name.lower() or p.suffix == ".egg-link"
    ]
    assert installed == []
    for pth in site_packages.glob("*.pth"):
        assert "pointrend" not in pth.read_text().lower(), pth
