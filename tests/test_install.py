"""The built wheel, as a user installs it: no top-level name that another project owns.

AdapterHub's ``adapters`` (PyPI) is also an import name ``adapters``. Our adapters ship as
``blackbox_dft.adapters`` (the repository's ``adapters/`` folder; ``blackbox_dft/adapters`` is a
link to it), so installing both into one folder overwrites neither.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "-q", "-w", str(out), str(ROOT)], check=True, timeout=300)
    (found,) = out.glob("blackbox_dft-*.whl")
    return found


def test_the_wheel_has_one_top_level_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"blackbox_dft"}, tops
    assert "blackbox_dft/adapters/remote/http.py" in names
    assert "blackbox_dft/adapters/standins/data/lfw_subset_smiling.csv" in names


@pytest.mark.slow
@pytest.mark.network
def test_installs_next_to_adapterhub_adapters(wheel: Path, tmp_path: Path) -> None:
    """Both packages in one folder (no dependencies: AdapterHub's needs torch to import):
    ours imports, and ``adapters`` is still AdapterHub's own files."""
    dl = tmp_path / "dl"
    got = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d",
                          str(dl), "adapters==1.3.0"], capture_output=True, text=True,
                         timeout=300)
    if got.returncode != 0:
        pytest.skip(f"the package index is not reachable: {got.stderr.strip()[-200:]}")
    target = tmp_path / "site"
    for order in ([wheel, *dl.glob("*.whl")], [*dl.glob("*.whl"), wheel]):  # either first
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--upgrade",
                        "--target", str(target), *map(str, order)], check=True, timeout=300)
        code = ("import importlib.util, blackbox_dft.adapters.remote.http as h, "
                "blackbox_dft.adapters.standins.tasks as t; "
                "spec = importlib.util.find_spec('adapters'); "
                "text = open(spec.origin).read(); "
                "assert 'blackbox' not in text and 'Adapter' in text, spec.origin; "
                "print(h.__file__)")
        env = {**os.environ, "PYTHONPATH": str(target)}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, timeout=120, cwd=str(tmp_path))
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().startswith(str(target)), out.stdout
