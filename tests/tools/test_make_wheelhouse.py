"""
tools/make_wheelhouse.sh refuses what it cannot do before it downloads anything (its real run
needs a package index, which the tests never reach).
"""

import subprocess

from tests.helpers import REPO


def make_wheelhouse(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(REPO / "tools" / "make_wheelhouse.sh"), *arguments],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_usage_is_shown_without_three_arguments():
    result = make_wheelhouse("3.12", "manylinux2014_x86_64")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "usage: bash tools/make_wheelhouse.sh PYTHON_VERSION PLATFORM DIR",
        "  e.g. bash tools/make_wheelhouse.sh 3.12 manylinux2014_x86_64 wheelhouse",
    ]


def test_a_folder_with_files_is_refused_and_kept(tmp_path):
    (tmp_path / "earlier.whl").write_text("kept")
    result = make_wheelhouse("3.12", "manylinux2014_x86_64", str(tmp_path))
    assert result.returncode == 2
    assert (
        f"make_wheelhouse: {tmp_path} exists and is not empty; give a new folder (nothing is "
        "overwritten)" in result.stderr
    )
    assert [p.name for p in tmp_path.iterdir()] == ["earlier.whl"]
