"""Dataset loaders (ImageFolder, CSV, CelebA, npz), sizes, bad files and seeded splits."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from blackbox_dft.data.datasets import (
    DataError,
    Dataset,
    fit_size,
    parse_size,
    read_image,
    split_dataset,
    write_image,
)
from blackbox_dft.data.loaders import list_images, load_dataset


def _rgb(value: int, h: int = 12, w: int = 12) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = value  # red channel: checks the BGR -> RGB conversion
    img[..., 2] = 255 - value
    return img


def _write(path, img: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_image(str(path), img)


def _folder(root, counts: dict[str, int], size: tuple[int, int] = (12, 12)) -> None:
    for c, (cls, n) in enumerate(counts.items()):
        for i in range(n):
            _write(root / cls / f"{i:03d}.png", _rgb(10 * c + i, *size))


def test_image_folder_reads_rgb_in_sorted_class_order(tmp_path):
    _folder(tmp_path, {"cat": 3, "dog": 2})
    ds = load_dataset(str(tmp_path))
    assert ds.images.shape == (5, 12, 12, 3) and ds.images.dtype == np.uint8
    assert ds.classes == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 0, 1, 1]
    assert ds.images[3, 0, 0].tolist() == [10, 0, 245]  # RGB, not BGR
    assert ds.names[0] == os.path.join("cat", "000.png") and ds.split is None


def test_classes_option_sets_the_model_output_order(tmp_path):
    _folder(tmp_path, {"face": 2, "no_face": 2})
    ds = load_dataset(str(tmp_path), classes=["no_face", "face"])
    assert ds.labels.tolist() == [1, 1, 0, 0]
    with pytest.raises(DataError, match="'smile' has no images"):
        load_dataset(str(tmp_path), classes=["no_face", "face", "smile"])


def test_numeric_class_folders_are_output_indices(tmp_path):
    _folder(tmp_path, {"0": 1, "2": 1, "10": 1})
    ds = load_dataset(str(tmp_path))
    assert sorted(ds.labels.tolist()) == [0, 2, 10]


def test_image_folder_with_split_folders(tmp_path):
    _folder(tmp_path / "train", {"a": 3, "b": 3})
    _folder(tmp_path / "val", {"a": 1, "b": 1})
    _folder(tmp_path / "test", {"a": 2, "b": 2})
    ds = load_dataset(str(tmp_path))
    assert sorted(set(ds.split.tolist())) == ["test", "train", "val"]
    train, val, test = split_dataset(ds, seed=0)
    assert (len(train), len(val), len(test)) == (6, 2, 4)


def test_empty_class_folder_missing_path_and_bad_size(tmp_path):
    _folder(tmp_path, {"a": 2})
    (tmp_path / "b").mkdir()
    with pytest.raises(DataError, match="class 'b' has no images"):
        load_dataset(str(tmp_path))
    with pytest.raises(DataError, match="not found"):
        load_dataset(str(tmp_path / "nope"))
    with pytest.raises(DataError, match="--size"):
        parse_size("12y")


def test_mixed_sizes_need_size(tmp_path):
    _write(tmp_path / "a" / "1.png", _rgb(1, 12, 12))
    _write(tmp_path / "a" / "2.png", _rgb(2, 20, 16))
    with pytest.raises(DataError, match=r"differ in size.*--size"):
        load_dataset(str(tmp_path))
    ds = load_dataset(str(tmp_path), size=(10, 10))
    assert ds.images.shape == (2, 10, 10, 3)
    crop = load_dataset(str(tmp_path), size=(8, 8), size_mode="crop")
    assert crop.images.shape == (2, 8, 8, 3)


def test_fit_size_crop_keeps_the_centre():
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, 10:30] = 200
    out = fit_size(img, (20, 20), "crop")
    assert out.shape == (20, 20, 3) and np.all(out == 200)


def test_corrupt_image_is_named_and_skipped_only_on_request(tmp_path):
    _folder(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "b" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"bad\.png.*--skip-bad"):
        load_dataset(str(tmp_path))
    ds = load_dataset(str(tmp_path), skip_bad=True)
    assert len(ds) == 4 and ds.skipped == [os.path.join("b", "bad.png")]


def test_csv_with_labels_and_split(tmp_path):
    for i in range(4):
        _write(tmp_path / "img" / f"{i}.png", _rgb(i))
    (tmp_path / "data.csv").write_text(
        "path,label,split\nimg/0.png,smile,train\nimg/1.png,neutral,train\n"
        "img/2.png,smile,val\nimg/3.png,neutral,test\n")
    ds = load_dataset(str(tmp_path / "data.csv"))
    assert ds.classes == ["neutral", "smile"] and ds.labels.tolist() == [1, 0, 1, 0]
    assert ds.split.tolist() == ["train", "train", "val", "test"]


def test_csv_missing_label_and_missing_file(tmp_path):
    _write(tmp_path / "0.png", _rgb(0))
    (tmp_path / "d.csv").write_text("path,label\n0.png,1\n0.png,\n")
    with pytest.raises(DataError, match=r"label missing for 0\.png \(row 2"):
        load_dataset(str(tmp_path / "d.csv"))
    (tmp_path / "e.csv").write_text("path,label\nmissing.png,1\n")
    with pytest.raises(DataError, match="missing.png"):
        load_dataset(str(tmp_path / "e.csv"))


def test_csv_attribute_columns_are_multilabel(tmp_path):
    for i in range(3):
        _write(tmp_path / f"{i}.png", _rgb(i))
    (tmp_path / "a.csv").write_text("file,Smiling,Male\n0.png,1,-1\n1.png,-1,1\n2.png,1,1\n")
    ds = load_dataset(str(tmp_path / "a.csv"))
    assert ds.multilabel and ds.classes == ["Smiling", "Male"]
    assert ds.labels.tolist() == [[1, 0], [0, 1], [1, 1]]
    one = load_dataset(str(tmp_path / "a.csv"), attributes=["Male"])
    assert not one.multilabel and one.labels.tolist() == [0, 1, 1]


def test_celeba_lists(tmp_path):
    files = [f"{i:06d}.jpg" for i in range(1, 7)]
    for i, f in enumerate(files):
        _write(tmp_path / "img_align_celeba" / f, _rgb(40 * i, 22, 18))
    rows = [f"{f} {1 if i % 2 else -1} {-1 if i < 3 else 1}" for i, f in enumerate(files)]
    (tmp_path / "list_attr_celeba.txt").write_text("6\nSmiling Male\n" + "\n".join(rows) + "\n")
    (tmp_path / "list_eval_partition.txt").write_text(
        "\n".join(f"{f} {min(i // 2, 2)}" for i, f in enumerate(files)) + "\n")
    ds = load_dataset(str(tmp_path), attributes=["Smiling"])
    assert ds.images.shape == (6, 22, 18, 3) and ds.labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert ds.split.tolist() == ["train", "train", "val", "val", "test", "test"]
    both = load_dataset(str(tmp_path / "list_attr_celeba.txt"), size=(8, 8))
    assert both.multilabel and both.labels.shape == (6, 2)
    with pytest.raises(DataError, match="no column 'Young'"):
        load_dataset(str(tmp_path), attributes=["Young"])


def test_npz_arrays_plain_and_split(tmp_path):
    x = np.random.default_rng(0).random((10, 5, 5))  # grey floats in [0, 1]
    np.savez(tmp_path / "a.npz", images=x, labels=np.arange(10) % 2)
    ds = load_dataset(str(tmp_path / "a.npz"))
    assert ds.images.shape == (10, 5, 5, 3) and ds.images.dtype == np.uint8
    assert ds.images[0, 0, 0, 0] == round(x[0, 0, 0] * 255)
    u8 = np.zeros((4, 6, 6, 3), np.uint8)
    np.savez(tmp_path / "b.npz", x_train=u8, y_train=[0, 1, 0, 1], x_test=u8[:2], y_test=[0, 1])
    ds = load_dataset(str(tmp_path / "b.npz"))
    assert ds.split.tolist() == ["train"] * 4 + ["test"] * 2
    np.savez(tmp_path / "c.npz", pictures=u8)
    with pytest.raises(DataError, match="expected arrays"):
        load_dataset(str(tmp_path / "c.npz"))


def test_stratified_split_is_seeded_and_keeps_proportions():
    labels = np.r_[np.zeros(60, np.int64), np.ones(40, np.int64)]
    ds = Dataset(np.zeros((100, 2, 2, 3), np.uint8), labels, ["a", "b"],
                 [str(i) for i in range(100)])
    tr, va, te = split_dataset(ds, 0.2, 0.2, seed=3)
    assert (len(tr), len(va), len(te)) == (60, 20, 20)
    assert va.labels.sum() == 8 and te.labels.sum() == 8
    again = split_dataset(ds, 0.2, 0.2, seed=3)[1]
    assert va.names == again.names
    assert split_dataset(ds, 0.2, 0.2, seed=4)[1].names != va.names
    assert split_dataset(ds, 0.0, 0.0)[1] is None


def test_write_image_is_lossless_and_list_images_recurses(tmp_path):
    img = np.random.default_rng(1).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    for ext in (".png", ".bmp", ".tiff"):
        write_image(str(tmp_path / f"x{ext}"), img)
        assert np.array_equal(read_image(str(tmp_path / f"x{ext}")), img)
    _write(tmp_path / "sub" / "y.png", img)
    (tmp_path / "notes.txt").write_text("x")
    cv2.imwrite(str(tmp_path / ".hidden.png"), img)
    assert list_images(str(tmp_path)) == [os.path.join("sub", "y.png"), "x.bmp", "x.png",
                                          "x.tiff"]
