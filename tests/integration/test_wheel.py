"""The wheel is what a terminal runs: built from this checkout and installed on its own, it
carries the schemas, the CDDL, the built-in card profile and the HIL suite, and the field
engineers' ``ssc-agent hil --sim`` passes from it (DEPLOY.md installs the wheel)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from agent.testing.pcscd import missing_tools

pytestmark = [pytest.mark.pcsc, pytest.mark.mqtt, pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built offline and installed (without dependencies) into a directory of its
    own; the dependencies come from this environment."""
    out = tmp_path_factory.mktemp("wheel")
    # built from a copy: setuptools writes build/ and *.egg-info into the source tree
    src = out / "src"
    junk = shutil.ignore_patterns("__pycache__", "*.pyc")
    for tree in ("agent", "hil_tests"):
        shutil.copytree(ROOT / tree, src / tree, ignore=junk)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out / "dist"), str(src)],
        check=True, capture_output=True, timeout=240,
    )  # fmt: skip
    (wheel,) = (out / "dist").glob("ssc_agent-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "agent/journal/schemas/v2.sql",
        "agent/wire/messages.cddl",
        "agent/profiles/default.toml",
        "hil_tests/conftest.py",
        "hil_tests/pytest.ini",
        "hil_tests/known_atrs.toml",
    ):
        assert needed in names, needed
    site = out / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
         str(wheel)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return site


def _run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=240, check=False,
    )  # fmt: skip


def test_the_installed_package_is_the_one_imported(installed: Path, tmp_path: Path) -> None:
    probe = (
        "import agent, agent.profile as p, agent.cli.hil_cmd as h; "
        "print(agent.__file__); print(p.load_profile('default').name); print(h.suite_dir())"
    )
    proc = _run(installed, tmp_path, "-c", probe)
    assert proc.returncode == 0, proc.stderr
    module, profile, suite = proc.stdout.split()
    assert Path(module).is_relative_to(installed)
    assert profile == "default"
    assert Path(suite) == installed / "hil_tests"


def test_hil_suite_passes_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    missing = missing_tools()
    if missing:
        pytest.skip("the HIL simulation needs " + ", ".join(missing))
    report = tmp_path / "report"
    proc = _run(
        installed, tmp_path, "-m", "agent", "hil", "--sim", "--non-interactive", "-q",
        "--report", str(report),
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "HIL: all required checks passed" in proc.stdout
    assert (report / "report.md").is_file()
