"""The wheel as a user installs it (issue 14, point 4): the MIT licence text, the ``py.typed``
marker that lets mypy read our annotations in user code, and a package-data configuration
that setuptools builds without a warning."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # builds a wheel (about 6 s) and runs mypy


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``pip wheel -v .`` as a packager runs it: the wheel and the build's log. Byte
    compiling is left on (PYTHONDONTWRITEBYTECODE makes distutils warn that it is off, a
    fact of the environment, not of our configuration)."""
    out = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    got = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w",
                          str(out), str(ROOT)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert got.returncode == 0, got.stderr[-2000:]
    (wheel,) = out.glob("blackbox_dft-*.whl")
    return wheel, got.stdout + got.stderr


def test_licence_is_mit_in_the_repository_and_the_wheel(built: tuple[Path, str]) -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 blackbox_dft contributors" in text
    with zipfile.ZipFile(built[0]) as whl:
        names = whl.namelist()
        (licence,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")
                      or n.endswith(".dist-info/LICENSE")]
        assert whl.read(licence).decode("utf-8") == text
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = whl.read(meta).decode("utf-8")
    assert "\nLicense: MIT\n" in metadata
    assert "\nLicense-File: LICENSE\n" in metadata


def test_the_build_has_no_setuptools_warning(built: tuple[Path, str]) -> None:
    """Setuptools' warnings (``SetuptoolsDeprecationWarning``, ``_Warning: Package ... is
    absent from the packages configuration``, distutils' ``warning:``) and their ``!!``
    banners; pip's own ``WARNING:`` lines (about the machine's index settings) are not
    setuptools'."""
    lines = built[1].splitlines()
    bad = [ln for ln in lines if re.search(r"Warning:|warning:|^\s*!!", ln)]
    assert not bad, "\n".join(bad)
    assert any("adding 'blackbox_dft/py.typed'" in ln for ln in lines)


def test_mypy_reads_our_types_in_user_code(built: tuple[Path, str], tmp_path: Path) -> None:
    """mypy on a user's file that imports blackbox_dft from the installed wheel: no
    "missing library stubs or py.typed marker", and our annotations are checked (a str
    version assigned to an int is the one error)."""
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                    "--target", str(site), str(built[0])], check=True, timeout=120)
    assert (site / "blackbox_dft" / "py.typed").is_file()
    user = tmp_path / "user.py"
    user.write_text("import blackbox_dft\n"
                    "from blackbox_dft import DataFineTuner\n"
                    "reveal_type(DataFineTuner.fit)\n"
                    "version: int = blackbox_dft.__version__\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(site)}  # mypy asks this interpreter for sys.path
    got = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental",
                          "--python-executable", sys.executable, "--no-error-summary",
                          str(user)], capture_output=True, text=True, env=env,
                         cwd=str(tmp_path), timeout=180)
    out = got.stdout + got.stderr
    assert "py.typed" not in out and "import-untyped" not in out, out
    assert re.search(r"user\.py:3: note: Revealed type is \"def \(self: .*DataFineTuner", out), out
    errors = [ln for ln in out.splitlines() if ": error:" in ln]
    assert len(errors) == 1 and "user.py:4:" in errors[0] and '"str"' in errors[0], out
