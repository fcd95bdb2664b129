"""Image width and height read from a file's header, without decoding its pixels.

Why: a few-KB PNG or JPEG can claim 30000x30000 pixels, and decoding it takes gigabytes
(a decompression bomb). :func:`image_size` reads only the bytes that hold the size, so
:func:`blackbox_dft.data.datasets.read_image` can refuse such a file before cv2 allocates anything.
The format is recognised from the file's first bytes (as cv2 does), never from its name.
Formats whose size is not in a short header (OpenEXR, ...) raise :class:`HeaderError`:
fail closed rather than decode blind.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

__all__ = ["HeaderError", "image_size"]

_HEAD = 4096  # the fixed-offset headers all lie in this many first bytes
_BOX_LIMIT = 1 << 20  # bytes of an AVIF/HEIF 'meta' box scanned for its sizes


class HeaderError(ValueError):
    """The header is truncated, malformed, or of a format whose size cannot be read."""


class _File:
    """Bounded reads at offsets of a binary file; short reads raise HeaderError."""

    def __init__(self, fh: BinaryIO, fmt: str) -> None:
        self.fh, self.fmt = fh, fmt

    def at(self, offset: int, n: int) -> bytes:
        self.fh.seek(offset)
        data = self.fh.read(n)
        if len(data) != n:
            raise HeaderError(f"truncated {self.fmt} header")
        return data

    def unpack(self, fmt: str, offset: int) -> tuple[int, ...]:
        return struct.unpack(fmt, self.at(offset, struct.calcsize(fmt)))


def _png(f: _File) -> tuple[int, int]:
    length, kind, w, h = f.unpack(">I4sII", 8)
    if kind != b"IHDR" or length != 13:
        raise HeaderError("malformed PNG header (IHDR is not the first chunk)")
    return w, h


# SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC): they hold the frame's size.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg(f: _File) -> tuple[int, int]:
    pos = 2
    while True:
        byte = f.at(pos, 1)[0]
        if byte != 0xFF:
            raise HeaderError("malformed JPEG (no marker where one was due)")
        marker = f.at(pos + 1, 1)[0]
        while marker == 0xFF:  # fill bytes before a marker
            pos += 1
            marker = f.at(pos + 1, 1)[0]
        pos += 2
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            raise HeaderError("malformed JPEG (no frame header before the image data)")
        if 0xD0 <= marker <= 0xD7 or marker in (0x01, 0xD8):
            continue  # markers without a length
        (length,) = f.unpack(">H", pos)
        if marker in _SOF:
            h, w = f.unpack(">HH", pos + 3)
            return w, h
        if length < 2:
            raise HeaderError("malformed JPEG (segment length < 2)")
        pos += length


def _bmp(f: _File) -> tuple[int, int]:
    (dib,) = f.unpack("<I", 14)
    if dib == 12:  # BITMAPCOREHEADER: 16-bit sizes
        return f.unpack("<HH", 18)  # type: ignore[return-value]
    w, h = f.unpack("<ii", 18)
    return abs(w), abs(h)  # a negative height means top-down rows


def _gif(f: _File) -> tuple[int, int]:
    w, h, flags = f.unpack("<HHB", 6)
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while True:  # to the first image descriptor: the frame cv2 decodes
        kind = f.at(pos, 1)[0]
        if kind == 0x2C:
            left, top, fw, fh = f.unpack("<HHHH", pos + 1)
            return max(w, left + fw), max(h, top + fh)
        if kind != 0x21:
            raise HeaderError("malformed GIF (no image before the trailer)")
        pos += 2
        while (n := f.at(pos, 1)[0]) != 0:  # skip the extension's sub-blocks
            pos += n + 1
        pos += 1


def _webp(f: _File) -> tuple[int, int]:
    chunk = f.at(12, 4)
    if chunk == b"VP8 ":
        if f.at(23, 3) != b"\x9d\x01\x2a":
            raise HeaderError("malformed WebP (VP8 start code missing)")
        w, h = f.unpack("<HH", 26)
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L":
        if f.at(20, 1) != b"\x2f":
            raise HeaderError("malformed WebP (VP8L signature missing)")
        (bits,) = f.unpack("<I", 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        b = f.at(24, 6)
        return int.from_bytes(b[:3], "little") + 1, int.from_bytes(b[3:], "little") + 1
    raise HeaderError(f"malformed WebP (unknown chunk {chunk!r})")


def _tiff(f: _File, head: bytes) -> tuple[int, int]:
    e = "<" if head[:2] == b"II" else ">"
    (magic,) = struct.unpack(e + "H", head[2:4])
    big = magic == 43  # BigTIFF: 8-byte offsets and counts
    if big:
        (ifd,) = f.unpack(e + "Q", 8)
        (count,) = f.unpack(e + "Q", ifd)
        first, size = ifd + 8, 20
    else:
        (ifd,) = f.unpack(e + "I", 4)
        (count,) = f.unpack(e + "H", ifd)
        first, size = ifd + 2, 12
    if count > 4096:
        raise HeaderError("malformed TIFF (implausible tag count)")
    found: dict[int, int] = {}
    entries = f.at(first, count * size)
    for i in range(count):
        entry = entries[i * size:(i + 1) * size]
        tag, kind = struct.unpack(e + "HH", entry[:4])
        if tag in (256, 257):  # ImageWidth, ImageLength
            value = entry[12:] if big else entry[8:]
            fmt = {3: "H", 4: "I", 16: "Q"}.get(kind)
            if fmt is None:
                raise HeaderError("malformed TIFF (image size of an unexpected type)")
            found[tag] = struct.unpack(e + fmt, value[:struct.calcsize(fmt)])[0]
    if len(found) != 2:
        raise HeaderError("malformed TIFF (no image width/length tags)")
    return found[256], found[257]


def _tokens(f: _File, head: bytes, count: int) -> list[bytes]:
    """The first ``count`` whitespace-separated header tokens after the magic, ``#`` comments
    skipped (PNM, PFM)."""
    text = b"\n".join(ln.split(b"#")[0] for ln in head[2:].split(b"\n"))
    tokens = text.split()[:count]
    if len(tokens) < count or not all(t.isdigit() for t in tokens):
        raise HeaderError(f"malformed {f.fmt} header")
    return tokens


def _pnm(f: _File, head: bytes) -> tuple[int, int]:
    if head[:2] == b"P7":  # PAM: WIDTH w / HEIGHT h lines
        fields = dict(ln.split()[:2] for ln in head.split(b"\n") if len(ln.split()) >= 2)
        try:
            return int(fields[b"WIDTH"]), int(fields[b"HEIGHT"])
        except (KeyError, ValueError):
            raise HeaderError("malformed PAM header") from None
    w, h = _tokens(f, head, 2)
    return int(w), int(h)


def _hdr(f: _File, head: bytes) -> tuple[int, int]:
    lines = head.split(b"\n")
    for i, ln in enumerate(lines[:-1]):
        if ln.strip() == b"":  # the size line follows the blank line
            parts = lines[i + 1].split()
            if len(parts) == 4 and parts[1].isdigit() and parts[3].isdigit():
                return int(parts[3]), int(parts[1])
            break
    raise HeaderError("malformed Radiance HDR header")


def _boxes(f: _File, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """ISO base media / JP2 boxes between two offsets: ``(type, payload start, payload end)``."""
    out: list[tuple[bytes, int, int]] = []
    pos = start
    while pos + 8 <= end and len(out) < 64:
        (size,) = f.unpack(">I", pos)
        kind = f.at(pos + 4, 4)
        head = 8
        if size == 1:
            (size,) = f.unpack(">Q", pos + 8)
            head = 16
        elif size == 0:
            size = end - pos  # to the end of the file
        if size < head:
            raise HeaderError(f"malformed {f.fmt} (box size {size})")
        out.append((kind, pos + head, pos + size))
        pos += size
    return out


def _jp2(f: _File, end: int) -> tuple[int, int]:
    for kind, start, stop in _boxes(f, 0, end):
        if kind == b"jp2h":
            for sub, s, _ in _boxes(f, start, stop):
                if sub == b"ihdr":
                    h, w = f.unpack(">II", s)
                    return w, h
    raise HeaderError("malformed JPEG 2000 (no image header box)")


def _j2k(f: _File) -> tuple[int, int]:
    xs, ys, xo, yo = f.unpack(">IIII", 8)  # SIZ: Xsiz, Ysiz, XOsiz, YOsiz
    return max(0, xs - xo), max(0, ys - yo)


def _heif(f: _File, end: int) -> tuple[int, int]:
    """AVIF/HEIF: the largest 'ispe' (image spatial extent) property of the 'meta' box."""
    for kind, start, stop in _boxes(f, 0, end):
        if kind == b"meta":
            data = f.at(start, min(stop - start, _BOX_LIMIT))
            sizes = []
            pos = data.find(b"ispe")
            while pos >= 0 and pos + 16 <= len(data):
                w, h = struct.unpack(">II", data[pos + 8:pos + 16])
                sizes.append((w, h))
                pos = data.find(b"ispe", pos + 4)
            if sizes:
                return max(sizes, key=lambda s: s[0] * s[1])
    raise HeaderError(f"malformed {f.fmt} (no image size property)")


def _sniff(head: bytes) -> str | None:
    """The format cv2 would pick for these first bytes, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"BM"):
        return "BMP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head[:1] == b"P" and head[1:2] in b"1234567" and len(head) > 2 and head[2:3].isspace():
        return "PNM"
    if head[:2] in (b"PF", b"Pf") and head[2:3].isspace():
        return "PFM"
    if head.startswith((b"#?RADIANCE", b"#?RGBE")):
        return "HDR"
    if head.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n"):
        return "JPEG 2000"
    if head.startswith(b"\xff\x4f\xff\x51"):
        return "J2K"
    if head.startswith(b"\x59\xa6\x6a\x95"):
        return "Sun raster"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis", b"heic", b"heix", b"mif1"):
        return "AVIF/HEIF"
    return None


def image_size(fh: BinaryIO) -> tuple[str, int, int]:
    """``(format, width, height)`` of the image in the binary file ``fh`` (read from offset 0).

    Reads at most a few KB (a JPEG's or TIFF's size may sit further in; only its
    segment/tag headers are read to reach it). Raises :class:`HeaderError` for an empty
    file, an unrecognised format or a truncated/malformed header.
    """
    fh.seek(0, 2)
    end = fh.tell()
    fh.seek(0)
    head = fh.read(_HEAD)
    if not head:
        raise HeaderError("empty file (0 bytes)")
    fmt = _sniff(head)
    if fmt is None:
        raise HeaderError(f"not a recognised image format (first bytes {head[:8].hex(' ')})")
    f = _File(fh, fmt)
    if fmt == "PNG":
        w, h = _png(f)
    elif fmt == "JPEG":
        w, h = _jpeg(f)
    elif fmt == "BMP":
        w, h = _bmp(f)
    elif fmt == "GIF":
        w, h = _gif(f)
    elif fmt == "WebP":
        w, h = _webp(f)
    elif fmt == "TIFF":
        w, h = _tiff(f, head)
    elif fmt in ("PNM", "PFM"):
        w, h = _pnm(f, head)
    elif fmt == "HDR":
        w, h = _hdr(f, head)
    elif fmt == "JPEG 2000":
        w, h = _jp2(f, end)
    elif fmt == "J2K":
        w, h = _j2k(f)
    elif fmt == "Sun raster":
        w, h = f.unpack(">II", 4)
    else:
        w, h = _heif(f, end)
    if w < 1 or h < 1:
        raise HeaderError(f"{fmt} header gives an empty image ({w}x{h})")
    return fmt, w, h
