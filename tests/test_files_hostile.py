"""Hostile files on disk: decompression bombs, broken images, malformed CSV / CelebA lists /
pairs.txt / .npz, and apply's output folder aimed at the originals.

Each bad file goes through the library loaders and through the CLI (``main([...])`` in
process): without ``--skip-bad`` exit 2 and one stderr line naming the file (and line), never
a traceback; with it the file is skipped and named. Each apply path case hashes the input
folder before and after: the originals are never changed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from cli_synthetic import PROBLEM, error_line, write_npz

import blackbox_dft.data.files as files
from blackbox_dft.cli.main import main
from blackbox_dft.data.datasets import DataError, read_image, write_image
from blackbox_dft.data.image_header import image_size
from blackbox_dft.data.loaders import load_dataset
from blackbox_dft.data.pairs import load_lfw_pairs

SPEC = "python:cli_synthetic:predict"


# ---------------------------------------------------------------- crafted files

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(w: int, h: int) -> bytes:
    """A PNG of a few KB whose IHDR says ``w`` x ``h`` (RGB, 8 bit), valid CRCs: its IDAT
    is a small zlib stream of zero rows, as a real bomb's would be (much longer)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 65536, 9)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))


def jpeg_claiming(w: int, h: int) -> bytes:
    """SOI, a JFIF APP0, a baseline SOF0 frame header of ``w`` x ``h``, EOI."""
    app0 = b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"
    sof = struct.pack(">BHHB", 8, h, w, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    return (b"\xff\xd8" + b"\xff\xe0" + struct.pack(">H", len(app0) + 2) + app0
            + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9")


def webp_claiming(w: int, h: int) -> bytes:
    vp8x = b"\0\0\0\0" + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


def tiff_claiming(w: int, h: int) -> bytes:
    entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, 8), (277, 3, 1, 1)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
    return b"II*\0" + struct.pack("<I", 8) + ifd


def bmp_claiming(w: int, h: int) -> bytes:
    dib = struct.pack("<IiiHHIIiiII", 40, w, -h, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(dib), 0, 0, 14 + len(dib)) + dib


def gif_claiming(w: int, h: int) -> bytes:
    """A 1x1 logical screen whose first frame is ``w`` x ``h``."""
    return (b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0, 0, 0)
            + b"\x2c" + struct.pack("<HHHHB", 0, 0, w, h, 0) + b"\x02\x02\x44\x01\x00\x3b")


def _encoded(ext: str, img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


RNG = np.random.default_rng(0)
SMALL = RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)  # RGB


def exif_rotated_jpeg() -> bytes:
    """A 4x8 (HxW) JPEG whose top row is white, with EXIF orientation 6 (turn 90 deg CW)."""
    img = np.zeros((4, 8, 3), np.uint8)
    img[0] = 255
    jpg = _encoded(".jpg", img)
    tiff = (b"MM\0*" + struct.pack(">IH", 8, 1) + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0)
            + b"\0\0\0\0")
    app1 = b"Exif\0\0" + tiff
    return jpg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpg[2:]


# ------------------------------------------------------------- bad image table

def _bytes(data: bytes) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(data)


def _dir(p: Path) -> None:
    p.mkdir()


def _loop(p: Path) -> None:
    os.symlink(p.name, p)  # a symlink to itself


def _dangling(p: Path) -> None:
    os.symlink(p.parent / "nowhere.png", p)


def _fifo(p: Path) -> None:
    os.mkfifo(p)  # opening it would block: it must be refused by its type


def _no_permission(p: Path) -> None:
    p.write_bytes(_encoded(".png", SMALL))
    p.chmod(0)


_TRUNCATED_PNG = _encoded(".png", RNG.integers(0, 256, (40, 40, 3), dtype=np.uint8))

# name -> (file name, how to make it, words the one-line error must hold)
BAD: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "png_bomb_30000": ("photo.png", _bytes(png_claiming(30000, 30000)),
                       "30000x30000 = 900 Mpx is over the limit of 50 Mpx (--max-image-pixels); "
                       "skip it with --skip-bad"),
    "png_bomb_40000": ("big.png", _bytes(png_claiming(40000, 40000)), "1600 Mpx is over"),
    "jpeg_bomb_65000": ("big.jpg", _bytes(jpeg_claiming(65000, 65000)),
                        "65000x65000 = 4225 Mpx is over"),
    "webp_bomb": ("big.webp", _bytes(webp_claiming(16384, 16384)), "16384x16384"),
    "tiff_bomb": ("big.tiff", _bytes(tiff_claiming(60000, 60000)), "60000x60000"),
    "bmp_bomb": ("big.bmp", _bytes(bmp_claiming(100000, 100000)), "100000x100000"),
    "gif_frame_bomb": ("big.png", _bytes(gif_claiming(65535, 65535)), "65535x65535"),
    "jpeg_named_png_bomb": ("sneaky.png", _bytes(jpeg_claiming(20000, 20000)), "20000x20000"),
    "truncated_png": ("cut.png", _bytes(_TRUNCATED_PNG[:len(_TRUNCATED_PNG) // 2]),
                      "corrupt or truncated PNG data"),
    "truncated_png_header": ("head.png", _bytes(_TRUNCATED_PNG[:12]), "truncated PNG header"),
    "jpeg_without_frame": ("noframe.jpg", _bytes(b"\xff\xd8\xff\xe0\x00\x04ab\xff\xd9"),
                           "no frame header"),
    "random_bytes": ("noise.png", _bytes(RNG.integers(0, 256, 3000, np.uint8).tobytes()),
                     "not a recognised image format"),
    "text_named_png": ("notes.png", _bytes(b"hello, I am not a picture\n"),
                       "not a recognised image format"),
    "zero_bytes": ("empty.png", _bytes(b""), "empty file"),
    "directory": ("folder.png", _dir, "a folder"),
    "symlink_loop": ("loop.png", _loop, "symbolic links"),
    "dangling_symlink": ("dangling.png", _dangling, "No such file"),
    "fifo": ("pipe.png", _fifo, "not a regular file"),
    "no_read_permission": ("locked.png", _no_permission, "Permission denied"),
}


def _make_bad(case: str, folder: Path) -> Path:
    if case == "no_read_permission" and os.geteuid() == 0:
        pytest.skip("root reads files without read permission")
    name, make, _ = BAD[case]
    path = folder / name
    make(path)
    return path


@pytest.fixture()
def no_decode(monkeypatch):
    """Counts cv2 decodes: a file refused from its header must never reach the decoder."""
    calls: list[int] = []
    real = files._decode

    def spy(raw: np.ndarray) -> np.ndarray | None:
        calls.append(raw.size)
        return real(raw)

    monkeypatch.setattr(files, "_decode", spy)
    return calls


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_image_is_one_named_error_from_the_library(tmp_path, case, no_decode):
    path = _make_bad(case, tmp_path)
    with pytest.raises(DataError) as info:
        read_image(str(path))
    msg = str(info.value)
    assert BAD[case][2] in msg and str(path) in msg and "\n" not in msg
    assert "--skip-bad" in msg
    if "bomb" in case:
        assert no_decode == []  # refused from the header: nothing was decoded


def _class_folder(root: Path) -> Path:
    """An ImageFolder of 24 readable 16x16 images in classes 0..3."""
    x, y = PROBLEM.train
    for i in range(24):
        d = root / str(int(y[i]))
        d.mkdir(parents=True, exist_ok=True)
        write_image(str(d / f"{i:03d}.png"), x[i])
    return root


def _bad_dataset(case: str, tmp_path: Path) -> tuple[str, str]:
    """An ImageFolder of 24 good images and the bad file among class 1 (a folder named
    like an image is only a sub-folder to a folder walk, so that case goes in a CSV);
    returns the data path and the bad file's name in the dataset."""
    root = _class_folder(tmp_path / "set")
    path = _make_bad(case, root / "1")
    rel = os.path.join("1", path.name)
    if case != "directory":
        return str(root), rel
    rows = [f"{os.path.join(c.name, f.name)},{c.name}" for c in sorted(root.iterdir())
            for f in sorted(c.iterdir())]
    (root / "d.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    return str(root / "d.csv"), rel


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_image_in_a_dataset_fails_or_is_skipped(tmp_path, case):
    data, rel = _bad_dataset(case, tmp_path)
    with pytest.raises(DataError, match=re.escape(BAD[case][0])):
        load_dataset(data)
    ds = load_dataset(data, skip_bad=True)
    assert len(ds) == 24 and ds.skipped == [rel]


def _fit_argv(data: str, out: str, *extra: str) -> list[str]:
    return ["fit", "--model", SPEC, "--data", data, "--out", out, "--scores", "logits",
            "--budget", "300", "--no-evaluate", "--no-progress", *extra]


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_image_cli_fit_exit_2_one_line(tmp_path, case, capsys):
    data, rel = _bad_dataset(case, tmp_path)
    out = tmp_path / "run"
    assert main(_fit_argv(data, str(out))) == 2
    line = error_line(capsys)
    assert rel in line and BAD[case][2] in line
    assert not out.exists()


def test_cli_fit_skip_bad_skips_every_bad_file_and_names_them(tmp_path, capsys):
    root = _class_folder(tmp_path / "set")
    made = []
    for case in sorted(BAD):
        if case == "directory" or (case == "no_read_permission" and os.geteuid() == 0):
            continue  # a folder is walked into, not read (see _bad_dataset)
        name, make, _ = BAD[case]
        path = root / "2" / f"{case}-{name}"
        make(path)
        made.append(path.name)
    assert main(_fit_argv(str(root), str(tmp_path / "run"), "--skip-bad")) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for name in made:
        assert f"skipped unreadable image: {os.path.join('2', name)}" in err


def test_good_but_unusual_images_load_as_uint8_rgb(tmp_path):
    grey = RNG.integers(0, 256, (9, 7), dtype=np.uint8)
    grey16 = grey.astype(np.uint16) * 257  # cv2 scales 16 bit to 8 by 1/257
    rgba = np.dstack([SMALL[:, :, ::-1], np.full((16, 16), 9, np.uint8)])  # BGRA on disk
    cases = {
        "grey.png": (_encoded(".png", grey), np.repeat(grey[:, :, None], 3, axis=2)),
        "grey16.png": (_encoded(".png", grey16), np.repeat(grey[:, :, None], 3, axis=2)),
        "rgb16.tiff": (_encoded(".tiff", SMALL[:, :, ::-1].astype(np.uint16) * 257), SMALL),
        "alpha.png": (_encoded(".png", rgba), SMALL),
        "png_named.jpg": (_encoded(".png", SMALL[:, :, ::-1]), SMALL),  # content decides
    }
    for name, (data, want) in cases.items():
        (tmp_path / name).write_bytes(data)
        got = read_image(str(tmp_path / name))
        assert got.dtype == np.uint8 and np.array_equal(got, want), name
    (tmp_path / "rot.jpg").write_bytes(exif_rotated_jpeg())
    rot = read_image(str(tmp_path / "rot.jpg"))
    assert rot.shape == (8, 4, 3)  # EXIF orientation applied: 4x8 turned upright
    assert rot[:, -1].min() > 200 and rot[:, 0].max() < 50  # the white top row is now right


def test_header_sizes_match_cv2_for_every_writable_format():
    img = RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for ext in (".png", ".jpg", ".bmp", ".gif", ".webp", ".tiff", ".ppm", ".pam", ".jp2",
                ".sr"):
        fmt, w, h = image_size(io.BytesIO(_encoded(ext, img)))
        assert (w, h) == (53, 37), (ext, fmt)
    for ext in (".pgm", ".pbm"):
        assert image_size(io.BytesIO(_encoded(ext, img[:, :, 0])))[1:] == (53, 37)


def test_pixel_limit_is_a_library_argument_and_a_cli_option(tmp_path, capsys):
    root = _class_folder(tmp_path / "set")  # 16x16 = 256 px each
    with pytest.raises(DataError, match=r"16x16 = 256 px is over the limit of 255 px"):
        load_dataset(str(root), max_pixels=255)
    assert len(load_dataset(str(root), max_pixels=256)) == 24
    monkey = files.MAX_IMAGE_PIXELS
    try:
        files.MAX_IMAGE_PIXELS = 100  # the process-wide default
        with pytest.raises(DataError, match="over the limit of 100 px"):
            read_image(str(root / "0" / os.listdir(root / "0")[0]))
    finally:
        files.MAX_IMAGE_PIXELS = monkey
    out = tmp_path / "run"
    assert main(_fit_argv(str(root), str(out), "--max-image-pixels", "0")) == 2
    assert "--max-image-pixels must be a whole number >= 1, got 0" in error_line(capsys)
    (tmp_path / "c.json").write_text(json.dumps({"max_image_pixels": 255}))
    assert main(_fit_argv(str(root), str(out), "--config", str(tmp_path / "c.json"))) == 2
    assert "over the limit of 255 px" in error_line(capsys)


def test_apply_max_image_pixels_option(tmp_path, run, capsys):
    src = _inputs(tmp_path / "in")  # 16x16 images
    assert _apply(run, src, tmp_path / "o1", "--max-image-pixels", "255") == 2
    assert "a.png: 16x16 = 256 px is over the limit of 255 px" in error_line(capsys)
    assert not (tmp_path / "o1").exists()  # vetted before anything was written
    assert _apply(run, src, tmp_path / "o2", "--max-image-pixels", "256") == 0
    assert "wrote 3 perturbed images" in capsys.readouterr().out


# ------------------------------------------------------ malformed text and arrays

def _csv_folder(tmp_path: Path) -> Path:
    for i in range(4):
        write_image(str(tmp_path / f"{i}.png"), PROBLEM.train[0][i])
    return tmp_path


_GOOD_ROWS = "0.png,0\n1.png,1\n2.png,0\n3.png,1\n"

# name -> (file content, words of the error; None: it must load)
CSV_CASES: dict[str, tuple[bytes, str | None]] = {
    "huge_field": (b"path,label\n0.png,0\n1.png," + b"x" * 200_000 + b"\n",
                   "d.csv:3: a field is longer than 131,072 characters"),
    "unclosed_quote": (b"path,label\n0.png,0\n\"1.png,1\n2.png,0\n" + b"y" * 140_000,
                       "d.csv:3: a field is longer"),
    "nul_byte": (b"path,label\n0.png,0\n1.p\0ng,1\n", "d.csv:3: holds a NUL byte"),
    "latin1": ("path,label\n0.png,0\ncaf\u00e9.png,1\n".encode("latin-1"),
               "d.csv:3: not UTF-8 text (byte 0xe9)"),
    "too_many_fields": (b"path,label\n0.png,0\n1.png,1,extra\n",
                        "d.csv:3: 3 fields, but the header has 2"),
    "missing_label": (b"path,label\n0.png,0\n1.png\n", "d.csv:3: label missing for 1.png"),
    "huge_class_id": (b"path,label\n0.png,0\n1.png,1000000000000\n",
                      "class id 1000000000000 is over 1,000,000"),
    "bad_split": (b"path,label,split\n0.png,0,train\n1.png,1,holdout\n",
                  "d.csv:3: unknown split 'holdout'"),
    "utf8_bom": (b"\xef\xbb\xbfpath,label\n" + _GOOD_ROWS.encode(), None),
    "utf16_bom": (("path,label\n" + _GOOD_ROWS).encode("utf-16"), None),
    "crlf_and_trailing_empty_cell": (b"path,label\r\n" + _GOOD_ROWS.replace(
        "\n", ",\r\n").encode(), None),
}


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_malformed_csv_is_one_line_with_file_and_line(tmp_path, case, capsys):
    folder = _csv_folder(tmp_path)
    content, want = CSV_CASES[case]
    path = folder / "d.csv"
    path.write_bytes(content)
    if want is None:
        ds = load_dataset(str(path))
        assert len(ds) == 4 and ds.labels.tolist() == [0, 1, 0, 1]
        return
    with pytest.raises(DataError, match=re.escape(want)):
        load_dataset(str(path))
    assert main(_fit_argv(str(path), str(tmp_path / "run"))) == 2
    assert want in error_line(capsys)


def _celeba(tmp_path: Path, attr: str, part: str | None = None) -> Path:
    img = tmp_path / "img_align_celeba"
    img.mkdir()
    for i in range(1, 5):
        write_image(str(img / f"{i:06d}.jpg"), PROBLEM.train[0][i])
    (tmp_path / "list_attr_celeba.txt").write_text(attr)
    if part is not None:
        (tmp_path / "list_eval_partition.txt").write_text(part)
    return tmp_path


_ATTR_OK = "4\nSmiling Male\n000001.jpg 1 -1\n000002.jpg -1 1\n000003.jpg 1 1\n000004.jpg -1 -1\n"

CELEBA_CASES = {
    "short_row": (_ATTR_OK.replace("000003.jpg 1 1", "000003.jpg 1"), None,
                  "list_attr_celeba.txt:5: 000003.jpg has 1 attribute values, expected 2"),
    "bad_value": (_ATTR_OK.replace("000002.jpg -1 1", "000002.jpg maybe 1"), None,
                  "list_attr_celeba.txt:4: attribute value 'maybe'"),
    "no_count_line": (_ATTR_OK.replace("4\n", "", 1), None, "not a CelebA attribute list"),
    "partition_line": (_ATTR_OK, "000001.jpg 0\n000002.jpg\n", "list_eval_partition.txt:2:"),
    "partition_split": (_ATTR_OK, "000001.jpg 0\n000002.jpg 7\n",
                        "list_eval_partition.txt:2: unknown split '7'"),
}


@pytest.mark.parametrize("case", sorted(CELEBA_CASES))
def test_malformed_celeba_lists_name_file_and_line(tmp_path, case):
    attr, part, want = CELEBA_CASES[case]
    root = _celeba(tmp_path, attr, part)
    with pytest.raises(DataError) as info:
        load_dataset(str(root), attributes=["Smiling"])
    assert want in str(info.value)


PAIRS_CASES = {
    "two_fields": ("Ann_A\t1\n", "pairs.txt:1: expected 'name n1 n2'"),
    "not_a_number": ("1\t2\nAnn_A\t1\tone\n", "pairs.txt:2: expected"),
    "negative": ("Ann_A\t1\t-2\n", "pairs.txt:1: expected"),
    "path_in_name": ("../../etc\t1\t2\n", "pairs.txt:1: person name '../../etc'"),
    "latin1": ("Ann_A\t1\t2\nJos\u00e9\t1\t2\n", "pairs.txt:2: not UTF-8 text"),
}


@pytest.mark.parametrize("case", sorted(PAIRS_CASES))
def test_malformed_pairs_txt_names_file_and_line(tmp_path, case, capsys):
    text, want = PAIRS_CASES[case]
    path = tmp_path / "pairs.txt"
    path.write_bytes(text.encode("latin-1"))
    (tmp_path / "lfw").mkdir()
    with pytest.raises(DataError) as info:
        load_lfw_pairs(str(path), str(tmp_path / "lfw"))
    assert want in str(info.value)
    assert main(["fit", "--model", "python:cli_synthetic:EMBEDDING", "--pairs", str(path),
                 "--image-root", str(tmp_path / "lfw"), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 2
    assert want in error_line(capsys)


def test_bomb_among_lfw_images_is_refused_before_decoding(tmp_path, no_decode):
    root = tmp_path / "lfw"
    (root / "Ann_A").mkdir(parents=True)
    write_image(str(root / "Ann_A" / "Ann_A_0001.png"), SMALL)
    (root / "Ann_A" / "Ann_A_0002.png").write_bytes(png_claiming(30000, 30000))
    (tmp_path / "pairs.txt").write_text("Ann_A\t1\t2\n")
    with pytest.raises(DataError, match="Ann_A_0002.png: 30000x30000"):
        load_lfw_pairs(str(tmp_path / "pairs.txt"), str(root), ext=".png")
    assert len(no_decode) == 1  # only the good image was decoded


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


_NPZ = _npz_bytes(images=np.zeros((4, 5, 5, 3), np.uint8), labels=np.arange(4) % 2)
NPZ_CASES = {
    "zero_bytes": (b"", "d.npz: cannot read as .npz"),
    "truncated": (_NPZ[:len(_NPZ) // 2], "d.npz: cannot read as .npz"),
    "single_npy": (_npy_bytes(np.zeros((4, 5, 5, 3), np.uint8)), "holds one .npy array"),
    "object_labels": (_npz_bytes(images=np.zeros((2, 5, 5, 3), np.uint8),
                                 labels=np.array([{}, {}], dtype=object)), "d.npz"),
    "inf_labels": (_npz_bytes(images=np.zeros((2, 5, 5, 3), np.uint8),
                              labels=np.array([0.0, np.inf])), "labels must be integers"),
    "scalar_labels": (_npz_bytes(images=np.zeros((2, 5, 5, 3), np.uint8), labels=np.array(1)),
                      "labels must be a (N,) or (N, A) array"),
}


@pytest.mark.parametrize("case", sorted(NPZ_CASES))
def test_damaged_npz_is_one_named_error(tmp_path, case, capsys):
    path = tmp_path / "d.npz"
    path.write_bytes(NPZ_CASES[case][0])
    with pytest.raises(DataError, match=re.escape(NPZ_CASES[case][1])):
        load_dataset(str(path))
    assert main(_fit_argv(str(path), str(tmp_path / "run"))) == 2
    assert "d.npz" in error_line(capsys)


# ------------------------------------------------------------------ apply paths

@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
    """A finished classification run of the synthetic box (fit only: no evaluation)."""
    base = tmp_path_factory.mktemp("applyrun")
    data = str(base / "d.npz")
    write_npz(data)
    out = str(base / "run")
    assert main(_fit_argv(data, out)) == 0
    return out


def _inputs(folder: Path) -> Path:
    """Two images in folder, one in folder/sub, a hidden image, a text file."""
    (folder / "sub").mkdir(parents=True)
    write_image(str(folder / "a.png"), PROBLEM.test[0][0])
    write_image(str(folder / "b.png"), PROBLEM.test[0][1])
    write_image(str(folder / "sub" / "c.png"), PROBLEM.test[0][2])
    write_image(str(folder / ".hidden.png"), PROBLEM.test[0][3])
    (folder / "notes.txt").write_text("not an image")
    return folder


def _hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (symlinked files: their target's bytes)."""
    out = {}
    for root, _, names in os.walk(folder):
        for n in names:
            p = os.path.join(root, n)
            if os.path.isfile(p):
                out[os.path.relpath(p, folder)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def _apply(run: str, src: Path | str, dst: Path | str, *extra: str) -> int:
    return main(["apply", "--run", run, "--input", str(src), "--output", str(dst), *extra])


def _link_output_to_input(tmp_path: Path, src: Path) -> Path:
    os.symlink(src, tmp_path / "link")
    return tmp_path / "link"


def _file_links_to_input(tmp_path: Path, src: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(src / "a.png", out / "a.png")
    return out


def _subfolder_links_to_input(tmp_path: Path, src: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(src / "sub", out / "sub")
    return out


def _subfolder_links_elsewhere(tmp_path: Path, src: Path) -> Path:
    out = tmp_path / "out"
    (tmp_path / "elsewhere").mkdir()
    out.mkdir()
    os.symlink(tmp_path / "elsewhere", out / "sub")
    return out


def _input_file_links_into_output(tmp_path: Path, src: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    write_image(str(out / "x.png"), PROBLEM.test[0][5])
    os.symlink(out / "x.png", src / "x.png")
    return out


# name -> (output folder maker, words of the refusal)
APPLY_REFUSED: dict[str, tuple[Callable[[Path, Path], Path | str], str]] = {
    "same_folder": (lambda t, s: s, "is the --input folder"),
    "same_folder_spelled_differently": (lambda t, s: str(s / "sub" / ".."),
                                        "is the --input folder"),
    "output_symlink_to_input": (_link_output_to_input, "is the --input folder"),
    "output_inside_input": (lambda t, s: s / "perturbed", "lies inside --input"),
    "output_inside_input_via_symlink": (
        lambda t, s: (os.symlink(s / "sub", t / "l2"), t / "l2" / "out")[1],
        "lies inside --input"),
    "input_inside_output": (lambda t, s: t, "lies inside --output"),
    "output_file_symlinked_to_an_input": (_file_links_to_input, "leads to the input file"),
    "output_subfolder_symlinked_to_input": (_subfolder_links_to_input,
                                            "leads to the input file sub/c.png"),
    "output_subfolder_symlinked_elsewhere": (_subfolder_links_elsewhere,
                                             "leads outside --output"),
    "input_file_symlinked_into_output": (_input_file_links_into_output,
                                         "leads to the input file x.png"),
}


@pytest.mark.parametrize("case", sorted(APPLY_REFUSED))
def test_apply_refuses_to_touch_the_originals(tmp_path, run, case, capsys):
    src = _inputs(tmp_path / "in")
    dst = APPLY_REFUSED[case][0](tmp_path, src)
    before = _hashes(src)
    capsys.readouterr()
    assert _apply(run, src, dst, "--force") == 2
    assert APPLY_REFUSED[case][1] in error_line(capsys)
    assert _hashes(src) == before


def test_apply_reports_what_it_skips_and_never_leaves_the_output(tmp_path, run, capsys):
    src = _inputs(tmp_path / "in")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    write_image(str(outside / "z.png"), PROBLEM.test[0][4])
    os.symlink(outside, src / "linked")  # a symlinked folder: not followed
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (src / "bomb.png").write_bytes(png_claiming(30000, 30000))
    before, before_out = _hashes(src), _hashes(outside)
    dst = tmp_path / "out"
    capsys.readouterr()
    assert _apply(run, src, dst) == 2
    assert "bomb.png: 30000x30000" in error_line(capsys)
    assert not dst.exists()  # every header is vetted before the first write
    assert _apply(run, src, dst, "--skip-bad") == 0
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    assert "skipped (--skip-bad): " + str(src / "bomb.png") + ": 30000x30000 = 900 Mpx is over " \
        "the limit of 50 Mpx (--max-image-pixels)\n" in cap.err
    summary = cap.out.strip()
    assert summary.startswith(f"wrote 3 perturbed images to {dst}")
    assert summary.endswith(
        "(skipped 2 unreadable or over the pixel limit: bomb.png, broken.png; 1 hidden (name "
        "starts with '.'): .hidden.png; 1 not images: notes.txt; 1 symlinked folders, not "
        "followed: linked)"), summary
    assert sorted(_hashes(dst)) == ["a.png", "b.png", os.path.join("sub", "c.png")]
    assert _hashes(src) == before and _hashes(outside) == before_out


def test_apply_writes_atomically_and_removes_stale_temp_files(tmp_path, run, capsys,
                                                              monkeypatch):
    src = _inputs(tmp_path / "in")
    dst = tmp_path / "out"
    real_replace = os.replace
    calls = []

    def killed_on_second(a: str, b: str) -> None:
        if str(b).startswith(str(dst)):
            calls.append(b)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as a Ctrl-C between writing and renaming
        real_replace(a, b)

    monkeypatch.setattr(os, "replace", killed_on_second)
    assert _apply(run, src, dst) == 130
    monkeypatch.setattr(os, "replace", real_replace)
    written = _hashes(dst)
    assert sorted(written) == ["a.png"]  # whole or absent, and no temp file left behind
    assert read_image(str(dst / "a.png")).shape == (16, 16, 3)
    # A SIGKILL leaves its temp file: one of a dead writer (pid beyond any pid_max) is
    # removed next time; a live writer's, and names outside the pattern, are left alone.
    dead = dst / ".bbdft-4194305-0123abcd.part"
    live = dst / f".bbdft-{os.getpid()}-89abcdef.part"
    mine = dst / ".bbdft-notes.part"
    for p in (dead, live, mine):
        p.write_bytes(b"\x89PNG half")
    capsys.readouterr()
    assert _apply(run, src, dst, "--force") == 0
    assert "removed 1 temporary files of an interrupted apply" in capsys.readouterr().out
    assert not dead.exists() and live.exists() and mine.exists()
    assert {"a.png", "b.png", os.path.join("sub", "c.png")} <= set(_hashes(dst))


def test_apply_output_files_are_exact_and_keep_normal_permissions(tmp_path, run):
    src = _inputs(tmp_path / "in")
    dst = tmp_path / "out"
    assert _apply(run, src, dst) == 0
    from blackbox_dft.core.state import read_npz_json

    delta = read_npz_json(os.path.join(run, "delta.npz"))[0]["delta"]
    want = np.clip(np.rint(PROBLEM.test[0][0] + delta), 0, 255).astype(np.uint8)
    assert np.array_equal(read_image(str(dst / "a.png")), want)
    umask = os.umask(0)
    os.umask(umask)
    assert (dst / "a.png").stat().st_mode & 0o777 == 0o666 & ~umask


def test_apply_handles_odd_file_names_on_one_line(tmp_path, run, capsys):
    src = tmp_path / "in"
    src.mkdir()
    good = ["we\nird.png", os.fsdecode(b"\xff.png"), " spaced name.png", "\u00fcn\u00ef.png"]
    for i, name in enumerate(good):
        write_image(str(src / name), PROBLEM.test[0][i])
    (src / os.fsdecode(b"\xfex.png")).write_bytes(b"junk")
    before = _hashes(src)
    capsys.readouterr()
    assert _apply(run, src, tmp_path / "out", "--skip-bad") == 0
    cap = capsys.readouterr()
    assert cap.out.count("\n") == 1 and cap.err.count("\n") == 1  # names escaped, not split
    assert "skipped 1 unreadable or over the pixel limit: \\udcfex.png" in cap.out
    assert sorted(os.listdir(tmp_path / "out")) == sorted(good)
    assert _hashes(src) == before
