"""Files on disk: reading an image safely, reading a text file, writing an image atomically.

Every failure is a :class:`DataError` of one line that names the file (and line) and what to
do. :func:`read_image` checks the pixel count in the header before decoding
(:data:`MAX_IMAGE_PIXELS`); :func:`write_image` never leaves a half-written file under its
final name. :mod:`blackbox_dft.data.datasets` re-exports these functions.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from dataclasses import dataclass, field

import cv2
import numpy as np

from blackbox_dft.data.image_header import HeaderError, image_size

__all__ = ["DataError", "MAX_IMAGE_PIXELS", "IMAGE_EXTENSIONS", "pixel_limit", "probe_image",
           "read_image", "read_text", "write_image", "remove_stale_parts", "list_images",
           "scan_images", "FolderScan"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm", ".pbm", ".jp2")

# Images with more pixels are refused before decoding (a decompression bomb: a 1 MB PNG can
# claim 30000x30000 = 900 Mpx, i.e. 2.7 GB as RGB and more while decoding). 50 Mpx admits a
# 7000x7000 photo (49 Mpx, ~150 MB as RGB); face crops and classifier inputs are far smaller.
# Raise it per call (``max_pixels=`` of the loaders), for the whole process
# (``blackbox_dft.data.files.MAX_IMAGE_PIXELS = ...``), or with ``--max-image-pixels``.
MAX_IMAGE_PIXELS = 50_000_000


class DataError(ValueError):
    """Bad input data: a missing folder, an unreadable image, a missing label, ..."""


def _mpx(n: int) -> str:
    return f"{n / 1e6:.4g} Mpx" if n >= 1_000_000 else f"{n} px"


def pixel_limit(max_pixels: int | None) -> int:
    """The pixel limit to apply: ``max_pixels``, or :data:`MAX_IMAGE_PIXELS` when None."""
    limit = MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise DataError(f"--max-image-pixels must be a whole number >= 1, got {limit!r}")
    return int(limit)


def _decode(raw: np.ndarray) -> np.ndarray | None:
    """cv2.imdecode as BGR, or None; cv2's own log lines (libpng/libjpeg complaints about a
    broken file) are silenced so the caller's one-line error is all the user sees."""
    old = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        return cv2.imdecode(raw, cv2.IMREAD_COLOR)  # applies EXIF orientation; 16 bit -> 8
    except cv2.error:  # e.g. its own size limit (OPENCV_IO_MAX_IMAGE_PIXELS)
        return None
    finally:
        cv2.utils.logging.setLogLevel(old)


_FIX = "fix or remove it, or pass --skip-bad"


def _checked(path: str, limit: int, read: bool) -> tuple[str, int, int, bytes]:
    """``(format, width, height, file bytes or b"")`` of an image file whose header passes
    every check; one-line DataError naming ``path`` otherwise."""
    try:
        st = os.stat(path)  # before open(): opening a named pipe would block
        if not stat.S_ISREG(st.st_mode):
            what = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise DataError(f"cannot read image {path}: {what}; {_FIX}")
        with open(path, "rb") as fh:
            try:
                fmt, w, h = image_size(fh)
            except HeaderError as exc:
                raise DataError(f"cannot decode image {path}: {exc}; {_FIX}") from None
            if w * h > limit:
                raise DataError(f"{path}: {w}x{h} = {_mpx(w * h)} is over the limit of "
                                f"{_mpx(limit)} (--max-image-pixels); skip it with --skip-bad")
            # No image within the limit needs more than 8 bytes a pixel (16-bit RGBA, raw)
            # plus metadata: a bigger file is not read into memory.
            if st.st_size > 8 * limit + (64 << 20):
                raise DataError(f"{path}: a {fmt} file of {st.st_size / 1e6:.0f} MB is larger "
                                f"than any image within the limit of {_mpx(limit)} can be; "
                                f"{_FIX}")
            fh.seek(0)
            return fmt, w, h, fh.read() if read else b""
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc.strerror or exc}; {_FIX}") from None


def probe_image(path: str, max_pixels: int | None = None) -> tuple[str, int, int]:
    """``(format, width, height)`` of an image file, from its header only: the checks of
    :func:`read_image` short of decoding (so a batch can be vetted before any output)."""
    fmt, w, h, _ = _checked(path, pixel_limit(max_pixels), read=False)
    return fmt, w, h


def read_image(path: str, max_pixels: int | None = None) -> np.ndarray:
    """Read one image file as uint8 RGB ``(H, W, 3)`` (grey replicated, alpha dropped,
    16-bit scaled to 8, EXIF orientation applied).

    The width and height are read from the file's header first: a file over
    ``max_pixels`` (default :data:`MAX_IMAGE_PIXELS`) is refused before any decoding.
    Every failure (missing, a folder, unreadable, empty, truncated, not an image, too
    large) is a :class:`DataError` of one line naming ``path``.
    """
    limit = pixel_limit(max_pixels)
    fmt, _, _, data = _checked(path, limit, read=True)
    img = _decode(np.frombuffer(data, dtype=np.uint8))
    if img is None or img.ndim != 3 or img.shape[0] * img.shape[1] > limit:
        raise DataError(f"cannot decode image {path}: corrupt or truncated {fmt} data; {_FIX}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_text(path: str) -> str:
    """A text file (UTF-8, with or without BOM; UTF-16 with a BOM) as ``str``.

    DataError naming ``path:line`` for bytes that are not UTF-8 or a NUL byte (a binary
    file, or UTF-16 without a BOM), instead of guessing an encoding.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    codec = "utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save "
                        "it as UTF-8") from None
    nul = text.find("\0")
    if nul >= 0:
        raise DataError(f"{path}:{text.count(chr(10), 0, nul) + 1}: holds a NUL byte; this is "
                        "not a text file (or it is UTF-16 without a BOM: save it as UTF-8)")
    return text


_PART = re.compile(r"\.bbdft-(\d+)-[0-9a-f]{8}\.part")  # write_image's temporary files


def write_image(path: str, image: np.ndarray) -> None:
    """Write one uint8 RGB ``(H, W, 3)`` image losslessly (format from the extension).

    Atomic: the bytes go to ``.bbdft-<pid>-<random>.part`` beside ``path``, then
    ``os.replace``; a kill never leaves a half-written file under the final name, and
    :func:`remove_stale_parts` removes the temporary files of killed writers.
    """
    ext = os.path.splitext(path)[1].lower()
    params: list[int] = []
    if ext == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, 101]  # >100 selects lossless WebP
    ok, buf = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise DataError(f"cannot encode {path} as {ext}")
    tmp = os.path.join(os.path.dirname(path),
                       f".bbdft-{os.getpid()}-{secrets.token_hex(4)}.part")
    # O_EXCL: never reuse (or follow a symlink planted at) an existing name; mode 0o666
    # lets the umask give the permissions a plain open() would.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(buf.tobytes())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would terminate it there: assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_stale_parts(folder: str) -> list[str]:
    """Delete :func:`write_image`'s temporary files under ``folder`` whose writer process is
    gone (killed mid-write); returns their paths relative to ``folder``.

    Only names matching ``.bbdft-<pid>-<8 hex>.part`` are touched; symlinked folders are
    not followed.
    """
    removed: list[str] = []
    for root, _dirs, files in os.walk(folder):
        for name in files:
            m = _PART.fullmatch(name)
            if m and not _alive(int(m.group(1))):
                path = os.path.join(root, name)
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    continue
                removed.append(os.path.relpath(path, folder))
    return sorted(removed)


@dataclass
class FolderScan:
    """What a recursive walk of a folder found; every path is relative to the folder.

    files: image files (by extension), sorted; hidden: names starting with "." (files, and
    folders with a trailing "/", not entered); not_images: other files; links: symlinked
    folders (not followed, so a walk never leaves the folder); errors: folders that could not
    be listed, as "path: reason".
    """

    files: list[str] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)
    not_images: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def scan_images(folder: str) -> FolderScan:
    """Walk ``folder`` recursively and sort what it holds into a :class:`FolderScan`."""
    scan = FolderScan()

    def failed(exc: OSError) -> None:
        where = os.path.relpath(exc.filename, folder) if exc.filename else folder
        scan.errors.append(f"{where}: {exc.strerror or exc}")

    for root, dirs, files in os.walk(folder, onerror=failed):  # followlinks=False
        rel = os.path.relpath(root, folder)

        def name(n: str, rel: str = rel) -> str:
            return n if rel == "." else os.path.join(rel, n)

        keep = []
        for d in sorted(dirs):
            if d.startswith("."):
                scan.hidden.append(name(d) + "/")
            elif os.path.islink(os.path.join(root, d)):
                scan.links.append(name(d))
            else:
                keep.append(d)
        dirs[:] = keep
        for f in sorted(files):
            if f.startswith("."):
                scan.hidden.append(name(f))
            elif f.lower().endswith(IMAGE_EXTENSIONS):
                scan.files.append(name(f))
            else:
                scan.not_images.append(name(f))
    for part in (scan.files, scan.hidden, scan.not_images, scan.links):
        part.sort()
    return scan


def list_images(folder: str) -> list[str]:
    """Image files under ``folder`` (recursive, sorted, hidden files and symlinked folders
    skipped), relative paths."""
    return scan_images(folder).files
