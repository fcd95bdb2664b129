"""``apply``: perturbed, lossless copies of a folder of images, with a run's one perturbation.

The originals are never written (folders compared by real path, no output path leading to
an input file or out of the output folder), each copy is written atomically, and every file
not written is named in the summary line. No math here: the tuner's ``transform`` perturbs.
"""

from __future__ import annotations

import os

from blackbox_dft.cli.kinds import Transformer, kind_named
from blackbox_dft.cli.logs import NOTES
from blackbox_dft.cli.runs import RunError, RunFolder
from blackbox_dft.data.datasets import DataError, read_image, write_image
from blackbox_dft.data.files import (
    FolderScan,
    pixel_limit,
    probe_image,
    remove_stale_parts,
    scan_images,
)

__all__ = ["apply_run"]

_LOSSLESS = (".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")


def _inside(path: str, folder: str) -> bool:
    """True when real path ``path`` is ``folder`` or lies under it (both real paths)."""
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # different drives (Windows)
        return False


def _apply_folders(input_dir: str, output_dir: str) -> tuple[str, str]:
    """Real paths of the input and output folders; DataError when writing the output could
    touch the input: the same folder (symlinks resolved), or one inside the other."""
    if not os.path.isdir(input_dir):
        raise DataError(f"input folder not found: {input_dir}")
    if os.path.lexists(output_dir) and not os.path.isdir(output_dir):
        raise DataError(f"--output {output_dir} exists and is not a folder")
    src, dst = os.path.realpath(input_dir), os.path.realpath(output_dir)
    if src == dst:
        raise DataError(f"--output {output_dir} is the --input folder {input_dir} (real path "
                        f"{src}); the originals would be overwritten: choose another folder")
    if _inside(dst, src):
        raise DataError(f"--output {output_dir} lies inside --input {input_dir} (real path "
                        f"{dst}); the next apply would perturb these copies again: choose a "
                        "folder outside it")
    if _inside(src, dst):
        raise DataError(f"--input {input_dir} lies inside --output {output_dir} (real path "
                        f"{src}); choose an output folder that does not hold the originals")
    return src, dst


def _apply_targets(input_dir: str, output_dir: str, files: list[str],
                   dst: str) -> dict[str, str]:
    """Output name (relative) -> input name for each file; lossy formats become .png.

    DataError when two inputs map to one output, or when an output path leads, through a
    symlinked file or folder, to an input file or out of the output folder (real ``dst``).
    """
    targets: dict[str, str] = {}
    for rel in files:
        stem, ext = os.path.splitext(rel)
        out = rel if ext.lower() in _LOSSLESS else stem + ".png"  # keep the delta exact
        if out in targets:
            raise DataError(f"{targets[out]} and {rel} would both be written as {out}")
        targets[out] = rel
    originals = {os.path.realpath(os.path.join(input_dir, rel)): rel for rel in files}
    for out in targets:
        dest = os.path.join(output_dir, out)
        real = os.path.realpath(dest)
        if real in originals:
            raise DataError(f"{dest} leads to the input file {originals[real]} (a symlink); "
                            "writing it would overwrite an original: remove the link")
        parent = os.path.realpath(os.path.dirname(dest))
        if not _inside(parent, dst):
            raise DataError(f"{os.path.dirname(dest)} leads outside --output {output_dir} (a "
                            f"symlinked folder, to {parent}): remove the link")
    return targets


def _shown(text: str) -> str:
    """``text`` safe to print on one line: control characters and undecodable bytes of file
    names (surrogates) escaped, as repr() would."""
    return "".join(c if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF
                   else repr(c)[1:-1] for c in text)


def _names(items: list[str], what: str, first: int = 3) -> str:
    shown = ", ".join(_shown(n) for n in items[:first]) + (", ..." if len(items) > first else "")
    return f"{len(items)} {what}: {shown}"


def _apply_summary(written: int, output_dir: str, targets: dict[str, str],
                   unreadable: list[str], scan: FolderScan, stale: list[str]) -> str:
    """apply's summary line: what was written, and everything not written, with names."""
    renamed = sum(out != rel for out, rel in targets.items() if rel not in unreadable)
    notes = [f"{renamed} lossy files written as .png so the perturbation survives"] \
        if renamed else []
    skipped = [_names(items, what) for items, what in (
        (unreadable, "unreadable or over the pixel limit"),
        (scan.hidden, "hidden (name starts with '.')"), (scan.not_images, "not images"),
        (scan.links, "symlinked folders, not followed"),
        (scan.errors, "folders that could not be listed")) if items]
    if skipped:
        notes.append("skipped " + "; ".join(skipped))
    if stale:
        notes.append(f"removed {len(stale)} temporary files of an interrupted apply")
    return f"wrote {written} perturbed images to {_shown(output_dir)}" + (
        f" ({'; '.join(notes)})" if notes else "")


class _Skips:
    """Unreadable images: skipped and named on stderr with ``--skip-bad``, else the error."""

    def __init__(self, skip_bad: bool) -> None:
        self.skip_bad = skip_bad
        self.names: list[str] = []

    def __call__(self, rel: str, exc: DataError) -> None:
        if not self.skip_bad:
            raise exc
        reason = str(exc).split("; fix or remove it")[0].split("; skip it with")[0]
        NOTES.warning("skipped (--skip-bad): %s", _shown(reason))
        self.names.append(rel)


def _write_copies(tuner: Transformer, input_dir: str, output_dir: str,
                  targets: dict[str, str], skips: _Skips, max_pixels: int | None) -> int:
    """Write the perturbed copy of every target (output name -> input name) not skipped
    yet, each atomically; returns how many were written."""
    written = 0
    for out, rel in targets.items():
        if rel in skips.names:
            continue
        try:
            img = read_image(os.path.join(input_dir, rel), max_pixels)
        except DataError as exc:  # past its header: broken pixel data
            skips(rel, exc)
            continue
        dest = os.path.join(output_dir, out)
        try:
            os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
            write_image(dest, tuner.transform(img[None])[0])
        except OSError as exc:
            raise DataError(f"cannot write {dest}: {exc.strerror or exc} ({written} of "
                            f"{len(targets)} written; each file is whole or absent)") from None
        written += 1
    return written


def apply_run(run_path: str, input_dir: str, output_dir: str, *, force: bool = False,
              skip_bad: bool = False, max_pixels: int | None = None) -> int:
    """Write perturbed, lossless copies of every image under ``input_dir``; returns the count.

    The originals are never written: the folders are compared by real path (symlinks
    resolved) and may not be nested; no output path may lead to an input file or out of
    ``output_dir``; each copy is written atomically (a temporary file, then a rename) and
    temporary files of a killed earlier apply are removed. Names starting with ".",
    symlinked folders (not followed) and non-image files are not processed and are counted
    in the summary line, as are unreadable images (``skip_bad``; else an error). Images over
    ``max_pixels`` (default :data:`blackbox_dft.data.files.MAX_IMAGE_PIXELS`) are refused before
    decoding.
    """
    run = RunFolder.open(run_path)
    tuner = kind_named(run.read_config().get("kind"), run.config).transformer(run)
    pixel_limit(max_pixels)
    _, dst = _apply_folders(input_dir, output_dir)
    scan = scan_images(input_dir)
    if scan.errors and not skip_bad:
        raise DataError(f"cannot list {os.path.join(input_dir, scan.errors[0])}; fix it or pass "
                        "--skip-bad")
    if not scan.files:
        hidden = f"; skipped {_names(scan.hidden, 'hidden')}" if scan.hidden else ""
        raise DataError(f"no images under {input_dir}{hidden}")
    targets = _apply_targets(input_dir, output_dir, scan.files, dst)
    clash = [o for o in targets if os.path.lexists(os.path.join(output_dir, o))]
    if clash and not force:
        raise RunError(f"{os.path.join(output_dir, clash[0])} exists ({len(clash)} files would "
                       "be overwritten); pass --force")
    skips = _Skips(skip_bad)
    for rel in scan.files:  # headers first (no decoding): a bad file stops before any write
        try:
            probe_image(os.path.join(input_dir, rel), max_pixels)
        except DataError as exc:
            skips(rel, exc)
    stale = remove_stale_parts(output_dir) if os.path.isdir(output_dir) else []
    written = _write_copies(tuner, input_dir, output_dir, targets, skips, max_pixels)
    unreadable = skips.names
    print(_apply_summary(written, output_dir, targets, unreadable, scan, stale))
    if written == 0:
        raise DataError(f"no image under {input_dir} could be read ({len(unreadable)} skipped)")
    return written
