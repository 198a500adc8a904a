"""Sources: every input kind and file format, validation messages, pickling, fingerprints, digests."""

from __future__ import annotations

import concurrent.futures
import gzip
import multiprocessing
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from weightmaps.errors import WeightmapsError
from weightmaps.readers import (
    MASK_SUFFIXES,
    _map_labels_lut,
    _map_labels_search,
    _pil_labels,
    mask_digest,
    read_image,
    read_mask,
)
from weightmaps.sources import ImageSource, SampleRef, open_image_source, open_source

nib = pytest.importorskip("nibabel")

RNG = np.random.default_rng(0)


def labels(shape=(6, 7), high=4, dtype=np.uint8) -> np.ndarray:
    return RNG.integers(0, high, shape).astype(dtype)


def save_png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


# --------------------------------------------------------------------------------------------------
# Input kinds
# --------------------------------------------------------------------------------------------------


def test_directory_is_walked_recursively_and_sorted(tmp_path: Path) -> None:
    data = {"b": labels(), "a/z": labels(), "a/b/c": labels(), "c": labels()}
    for id_, arr in data.items():
        save_png(tmp_path / f"{id_}.png", arr)
    (tmp_path / "notes.txt").write_text("not a mask")
    save_png(tmp_path / ".hidden" / "x.png", labels())  # hidden folders are skipped
    src = open_source(tmp_path)
    assert src.ids == ["a/b/c", "a/z", "b", "c"]
    assert len(src) == 4
    for i, id_ in enumerate(src.ids):
        np.testing.assert_array_equal(src.read(i), data[id_])
        assert src.samples[i] == SampleRef(id=id_, path=str(tmp_path / f"{id_}.png"), index=None)
        assert src.describe(i) == str(tmp_path / f"{id_}.png")
        assert src.spacing(i) is None
    assert open_source(str(tmp_path)).ids == src.ids  # str and Path alike


def test_glob_root_is_the_non_magic_prefix(tmp_path: Path) -> None:
    save_png(tmp_path / "data" / "x" / "one.png", labels())
    save_png(tmp_path / "data" / "two.png", labels())
    np.save(tmp_path / "data" / "three.npy", labels())
    src = open_source(f"{tmp_path}/data/**/*.png")
    assert src.ids == ["two", "x/one"]
    assert open_source(str(tmp_path / "data" / "*")).ids == ["three", "two"]
    with pytest.raises(WeightmapsError, match=r"matched no mask files"):
        open_source(f"{tmp_path}/data/*.tif")


def test_list_file_with_relative_paths_and_comments(tmp_path: Path) -> None:
    a, b = labels(), labels(dtype=np.uint16)
    save_png(tmp_path / "masks" / "sub" / "a.png", a)
    np.save(tmp_path / "masks" / "b.npy", b)
    lst = tmp_path / "lists" / "train.txt"
    lst.parent.mkdir()
    lst.write_text(f"# training masks\n\n../masks/sub/a.png\n   \n{tmp_path / 'masks' / 'b.npy'}\n")
    src = open_source(lst)
    assert src.ids == ["b", "sub/a"]  # root: the common parent of the listed files
    np.testing.assert_array_equal(src.read(1), a)
    assert src.read(0).dtype == np.uint16

    bad = tmp_path / "lists" / "bad.lst"
    bad.write_text("../masks/b.npy\n../masks/missing.png\n")
    with pytest.raises(WeightmapsError, match=r"bad\.lst:2: .*missing\.png: no such file"):
        open_source(bad)


def test_list_of_paths_and_single_file(tmp_path: Path) -> None:
    p1 = save_png(tmp_path / "x" / "m1.png", labels())
    p2 = save_png(tmp_path / "y" / "m2.png", labels())
    src = open_source([p2, str(p1)])
    assert src.ids == ["x/m1", "y/m2"]
    assert open_source(p1).ids == ["m1"]
    with pytest.raises(WeightmapsError, match="empty"):
        open_source([])
    with pytest.raises(WeightmapsError, match=r"nope\.png: no such file"):
        open_source([p1, tmp_path / "nope.png"])


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_zarr_array_path_and_object(tmp_path: Path, zarr_format: int) -> None:
    data = labels((3, 5, 6), high=7, dtype=np.uint16)
    path = tmp_path / "masks.zarr"
    arr = zarr.create_array(path, shape=data.shape, dtype=data.dtype, chunks=(1, 5, 6), zarr_format=zarr_format)
    arr[:] = data
    for src in (open_source(path), open_source(arr)):
        assert src.ids == ["000000", "000001", "000002"]
        assert [s.index for s in src.samples] == [0, 1, 2]
        assert all(s.path is None for s in src.samples)
        for i in range(3):
            out = src.read(i)
            np.testing.assert_array_equal(out, data[i])
            assert out.dtype == np.uint16 and out.flags.c_contiguous
        assert src.describe(1).endswith("[1] (id 000001)")
        assert src.spacing(0) is None


def test_zarr_volumes_ids_and_errors(tmp_path: Path) -> None:
    vols = zarr.create_array(tmp_path / "v.zarr", shape=(2, 3, 4, 5), dtype="int32")
    vols[:] = labels((2, 3, 4, 5), dtype=np.int32)
    assert open_source(vols).read(1).shape == (3, 4, 5)

    floats = zarr.create_array(tmp_path / "f.zarr", shape=(2, 3, 3), dtype="float32")
    with pytest.raises(WeightmapsError, match=r"f\.zarr: non-integer"):
        open_source(tmp_path / "f.zarr")
    flat = zarr.create_array(tmp_path / "flat.zarr", shape=(4, 4), dtype="uint8")
    with pytest.raises(WeightmapsError, match=r"flat\.zarr: zarr array of shape \(4, 4\)"):
        open_source(flat)

    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    group.create_array("masks", shape=(1, 2, 2), dtype="uint8")
    with pytest.raises(WeightmapsError, match=r"g\.zarr: is a zarr group.*g\.zarr/masks"):
        open_source(tmp_path / "g.zarr")
    assert open_source(tmp_path / "g.zarr" / "masks").ids == ["000000"]
    del floats


def test_zarr_negative_label_names_store_index_and_id(tmp_path: Path) -> None:
    arr = zarr.create_array(tmp_path / "n.zarr", shape=(2, 2, 2), dtype="int16")
    arr[1, 0, 0] = -3
    src = open_source(tmp_path / "n.zarr")
    src.read(0)
    with pytest.raises(WeightmapsError, match=r"n\.zarr\[1\] \(id 000001\): negative label -3"):
        src.read(1)


def test_missing_inputs_and_empty_directories(tmp_path: Path) -> None:
    with pytest.raises(WeightmapsError, match=r"nothing-here: no such file or directory"):
        open_source(tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightmapsError, match=r"empty: no mask files found"):
        open_source(tmp_path / "empty")
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(WeightmapsError, match=r"notes\.md: not a mask file"):
        open_source(tmp_path / "notes.md")
    with pytest.raises(WeightmapsError, match="inputs"):
        open_source(42)  # type: ignore[arg-type]


def test_duplicate_ids_name_both_files(tmp_path: Path) -> None:
    a = save_png(tmp_path / "a.png", labels())
    tifffile.imwrite(tmp_path / "a.tif", labels(), photometric="minisblack")
    with pytest.raises(WeightmapsError, match="duplicate sample id 'a'") as info:
        open_source(tmp_path)
    assert str(a) in str(info.value) and str(tmp_path / "a.tif") in str(info.value)
    with pytest.raises(WeightmapsError, match="listed twice"):
        open_source([a, a])


def test_suffixes_are_case_insensitive_and_nii_gz_is_one_extension(tmp_path: Path) -> None:
    save_png(tmp_path / "UPPER.PNG", labels())
    nib.save(nib.Nifti1Image(labels((3, 4, 5)), np.eye(4)), tmp_path / "brain.scan.nii.gz")
    assert open_source(tmp_path).ids == ["UPPER", "brain.scan"]
    assert ".nii.gz" in MASK_SUFFIXES


# --------------------------------------------------------------------------------------------------
# Image sources: the same input kinds and ids, read with read_image
# --------------------------------------------------------------------------------------------------


def test_image_directory_ids_match_the_mask_directory(tmp_path: Path) -> None:
    for id_ in ("a/1", "a/2", "b"):
        save_png(tmp_path / "masks" / f"{id_}.png", labels())
    rgb = labels((6, 7, 3), high=256)
    save_png(tmp_path / "images" / "a" / "1.png", rgb)
    Image.fromarray(rgb).save(tmp_path / "images" / "a" / "2.jpg", quality=95)
    Image.fromarray(rgb).save(tmp_path / "images" / "b.JPEG")
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    images = open_image_source(tmp_path / "images")
    assert isinstance(images, ImageSource)
    assert images.ids == open_source(tmp_path / "masks").ids == ["a/1", "a/2", "b"]
    assert repr(images).startswith("ImageSource(")
    np.testing.assert_array_equal(images.read(0), rgb)
    assert images.read(1).shape == images.read(2).shape == (6, 7, 3)
    assert images.read(1).dtype == np.uint8
    assert open_image_source(str(tmp_path / "images" / "**" / "*.jpg")).ids == ["a/2"]  # root: images
    with pytest.raises(WeightmapsError, match=r"2\.jpg: not a mask file"):
        open_source(tmp_path / "images" / "a" / "2.jpg")  # JPEG is an image, never a mask
    with pytest.raises(WeightmapsError, match=r"notes\.txt: not an image file"):
        open_image_source([tmp_path / "images" / "notes.txt"])
    Image.fromarray(rgb).save(tmp_path / "images" / "b.png")
    with pytest.raises(WeightmapsError, match="duplicate sample id 'b'"):
        open_image_source(tmp_path / "images")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightmapsError, match=r"empty: no image files found \(suffixes .*\.jpg"):
        open_image_source(tmp_path / "empty")


def test_image_zarr_array_of_any_dtype_pickles_and_reads(tmp_path: Path) -> None:
    data = RNG.random((3, 5, 6, 2)).astype(np.float32)
    arr = zarr.create_array(tmp_path / "img.zarr", shape=data.shape, dtype=data.dtype, chunks=(1, 5, 6, 2))
    arr[:] = data
    masks = zarr.create_array(tmp_path / "m.zarr", shape=(3, 5, 6), dtype="uint8")
    for src in (open_image_source(tmp_path / "img.zarr"), open_image_source(arr)):
        assert src.ids == open_source(masks).ids == ["000000", "000001", "000002"]
        np.testing.assert_array_equal(src.read(2), data[2])
        assert src.read(2).dtype == np.float32 and src.label_map is None
    src = open_image_source(tmp_path / "img.zarr")
    src.read(0)  # opened here; the pickle carries the path only
    clone = pickle.loads(pickle.dumps(src))
    assert clone._zarr_cache is None and clone.fingerprint() == src.fingerprint()
    np.testing.assert_array_equal(clone.read(1), data[1])
    flat = zarr.create_array(tmp_path / "flat.zarr", shape=(4, 4), dtype="float32")
    with pytest.raises(WeightmapsError, match=r"flat\.zarr: zarr array of shape \(4, 4\)"):
        open_image_source(flat)
    with pytest.raises(WeightmapsError, match=r"img\.zarr: non-integer masks"):
        open_source(tmp_path / "img.zarr")  # the dtype check is for masks only


def test_image_list_file(tmp_path: Path) -> None:
    gray = labels((6, 7), high=256)
    save_png(tmp_path / "images" / "sub" / "a.png", gray)
    Image.fromarray(gray).save(tmp_path / "images" / "b.jpg")
    lst = tmp_path / "images.txt"
    lst.write_text("# images\nimages/sub/a.png\n\nimages/b.jpg\n")
    src = open_image_source(lst)
    assert src.ids == ["b", "sub/a"]
    np.testing.assert_array_equal(src.read(1), gray)
    bad = tmp_path / "bad.lst"
    bad.write_text("images/b.jpg\nimages.txt\n")
    with pytest.raises(WeightmapsError, match=r"bad\.lst:2: .*images\.txt: not an image file"):
        open_image_source(bad)
    with pytest.raises(WeightmapsError, match="no image files: the input list is empty"):
        open_image_source([])


# --------------------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------------------


def test_png_mode_l_and_p_palette_indices(tmp_path: Path) -> None:
    a = labels(high=12)
    assert read_mask(save_png(tmp_path / "l.png", a)).dtype == np.uint8
    img = Image.fromarray(a)
    img.putpalette([(255 - i) % 256 for i in range(768)])  # colours differ from indices
    img.save(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as check:
        assert check.mode == "P"
    out = read_mask(tmp_path / "p.png")
    np.testing.assert_array_equal(out, a)
    assert out.dtype == np.uint8


def test_png_16_bit_and_1_bit(tmp_path: Path) -> None:
    a16 = labels(high=60000, dtype=np.uint16)
    out = read_mask(save_png(tmp_path / "i16.png", a16))
    np.testing.assert_array_equal(out, a16)
    assert out.dtype == np.uint16
    bits = labels(high=2).astype(bool)
    out = read_mask(save_png(tmp_path / "one.png", bits))
    np.testing.assert_array_equal(out, bits.astype(np.uint8))
    assert out.dtype == np.uint8


def test_pillow_mode_i_and_big_endian_16_bit() -> None:
    # Pillow cannot write mode "I" PNGs, but old files and other readers produce them.
    a32 = labels(high=100_000, dtype=np.int32)
    out = _pil_labels(Image.fromarray(a32), "x.png")
    np.testing.assert_array_equal(out, a32)
    assert out.dtype == np.int32
    big = Image.frombytes("I;16B", (7, 6), labels(high=40000, dtype=np.uint16).astype(">u2").tobytes())
    out = _pil_labels(big, "x.png")
    assert out.dtype == np.uint16 and out.dtype.isnative


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "F"])
def test_png_colour_modes_are_refused(tmp_path: Path, mode: str) -> None:
    path = tmp_path / f"{mode}.png"
    img = Image.new(mode, (5, 4))
    if mode == "F":  # PNG cannot hold floats: check the mode handling directly
        with pytest.raises(WeightmapsError, match=r"mode F is not a label image"):
            _pil_labels(img, str(path))
        return
    img.save(path)
    with pytest.raises(WeightmapsError, match=rf"{mode}\.png: PNG mode {mode} is not a label image; convert"):
        read_mask(path)


def test_tiff_single_multi_page_and_3d(tmp_path: Path) -> None:
    a = labels(dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", a)
    out = read_mask(tmp_path / "a.tif")
    np.testing.assert_array_equal(out, a)
    assert out.dtype == np.uint16

    vol = labels((4, 6, 7), dtype=np.int32)
    with tifffile.TiffWriter(tmp_path / "pages.tiff") as tif:  # pages written one by one
        for page in vol:
            tif.write(page)
    np.testing.assert_array_equal(read_mask(tmp_path / "pages.tiff"), vol)
    tifffile.imwrite(tmp_path / "vol.tif", vol, photometric="minisblack")
    np.testing.assert_array_equal(read_mask(tmp_path / "vol.tif"), vol)


def test_tiff_float_and_rgb_are_refused(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "f.tif", labels().astype(np.float32))  # integral values, still refused
    with pytest.raises(WeightmapsError, match=r"f\.tif: non-integer mask \(dtype float32\)"):
        read_mask(tmp_path / "f.tif")
    tifffile.imwrite(tmp_path / "rgb.tif", labels((6, 7, 3)), photometric="rgb")
    with pytest.raises(WeightmapsError, match=r"rgb\.tif: TIFF with 3 samples per pixel"):
        read_mask(tmp_path / "rgb.tif")


def test_npy_dtypes_and_validation(tmp_path: Path) -> None:
    for dtype in (np.uint8, np.int16, np.uint32, np.int64, ">i4"):
        a = labels(dtype=dtype)
        np.save(tmp_path / "a.npy", a)
        out = read_mask(tmp_path / "a.npy")
        np.testing.assert_array_equal(out, a)
        assert out.dtype == np.dtype(dtype).newbyteorder("=") and out.flags.c_contiguous
    np.save(tmp_path / "b.npy", labels(high=2).astype(bool))
    assert read_mask(tmp_path / "b.npy").dtype == np.uint8
    np.save(tmp_path / "t.npy", np.asfortranarray(labels((3, 4, 5))))
    assert read_mask(tmp_path / "t.npy").flags.c_contiguous

    cases = {
        "neg.npy": (np.array([[0, -1], [2, 3]], np.int8), r"neg\.npy: negative label -1"),
        "4d.npy": (np.zeros((2, 2, 2, 2), np.uint8), r"4d\.npy: mask of shape \(2, 2, 2, 2\) has 4 dimensions"),
        "1d.npy": (np.zeros(5, np.uint8), r"1d\.npy: .* has 1 dimensions"),
        "empty.npy": (np.zeros((0, 4), np.uint8), r"empty\.npy: empty mask \(shape \(0, 4\)\)"),
        "float.npy": (np.zeros((2, 2), np.float64), r"float\.npy: non-integer mask \(dtype float64\)"),
        "complex.npy": (np.zeros((2, 2), np.complex64), r"complex\.npy: non-integer mask"),
    }
    for name, (arr, message) in cases.items():
        np.save(tmp_path / name, arr)
        with pytest.raises(WeightmapsError, match=message):
            read_mask(tmp_path / name)
    np.save(tmp_path / "obj.npy", np.array([[1, None]], dtype=object), allow_pickle=True)
    with pytest.raises(WeightmapsError, match=r"obj\.npy: cannot read"):
        read_mask(tmp_path / "obj.npy")


def test_nifti_nii_and_nii_gz_with_spacing(tmp_path: Path) -> None:
    vol = labels((5, 6, 4), dtype=np.int16)
    affine = np.diag([0.5, 0.7, 2.0, 1.0])
    nib.save(nib.Nifti1Image(vol, affine), tmp_path / "a.nii")
    nib.save(nib.Nifti1Image(vol[..., 0].astype(np.uint8), np.diag([0.8, 0.9, 3.0, 1.0])), tmp_path / "b.nii.gz")
    src = open_source(tmp_path)
    assert src.ids == ["a", "b"]
    out = src.read(0)
    np.testing.assert_array_equal(out, vol)  # the file's (x, y, z) array order, as stored
    assert out.dtype == np.int16
    assert src.spacing(0) == (0.5, 0.7, 2.0)
    assert src.read(1).shape == (5, 6) and src.spacing(1) == (0.8, 0.9)
    assert all(isinstance(z, float) for z in src.spacing(0))


def test_missing_nibabel_gives_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nib.save(nib.Nifti1Image(labels((3, 3, 3)), np.eye(4)), tmp_path / "a.nii")
    monkeypatch.setitem(sys.modules, "nibabel", None)  # makes `import nibabel` fail
    with pytest.raises(WeightmapsError, match=r"a\.nii: .*weightmaps\[nifti\]"):
        read_mask(tmp_path / "a.nii")


def test_truncated_and_corrupt_files_name_the_file(tmp_path: Path) -> None:
    path = save_png(tmp_path / "cut.png", labels((64, 64), high=200))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightmapsError, match=r"cut\.png: cannot read"):
        read_mask(path)
    (tmp_path / "junk.tif").write_bytes(b"this is not a tiff")
    with pytest.raises(WeightmapsError, match=r"junk\.tif: cannot read"):
        read_mask(tmp_path / "junk.tif")
    np.save(tmp_path / "cut.npy", labels((30, 30)))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "cut.npy").read_bytes()[:200])
    with pytest.raises(WeightmapsError, match=r"cut\.npy: cannot read"):
        read_mask(tmp_path / "cut.npy")
    (tmp_path / "cut.nii.gz").write_bytes(gzip.compress(b"\0" * 100))
    with pytest.raises(WeightmapsError, match=r"cut\.nii\.gz: cannot read"):
        read_mask(tmp_path / "cut.nii.gz")
    src = open_source(tmp_path / "cut.png")
    with pytest.raises(WeightmapsError, match=r"cut\.png: cannot read"):
        src.read(0)
    with pytest.raises(WeightmapsError, match=r"gone\.png: no such file"):
        read_mask(tmp_path / "gone.png")


def test_read_image_any_dtype_and_layout(tmp_path: Path) -> None:
    rgb = labels((6, 7, 3), high=256)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png"), rgb)
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg")
    assert read_image(tmp_path / "rgb.jpg").shape == (6, 7, 3)
    img = Image.fromarray(labels(high=3))
    img.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90] + [0] * 759)
    img.save(tmp_path / "pal.png")
    assert read_image(tmp_path / "pal.png").shape == (6, 7, 3)  # palette expanded to colours
    floats = RNG.random((4, 5)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", floats)
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif"), floats)
    np.save(tmp_path / "f.npy", floats)
    np.testing.assert_array_equal(read_image(tmp_path / "f.npy"), floats)
    with pytest.raises(WeightmapsError, match=r"x\.gif: unsupported image format"):
        read_image(tmp_path / "x.gif")


# --------------------------------------------------------------------------------------------------
# Label maps
# --------------------------------------------------------------------------------------------------


def test_label_map_on_read(tmp_path: Path) -> None:
    binary = (labels(high=2) * 255).astype(np.uint8)
    path = save_png(tmp_path / "m.png", binary)
    out = open_source(tmp_path, label_map={255: 1}).read(0)
    np.testing.assert_array_equal(out, binary // 255)
    assert out.dtype == np.uint8
    wide = read_mask(path, label_map={255: 300})  # destination needs more than uint8
    assert wide.dtype == np.uint16 and set(np.unique(wide)) <= {0, 300}

    np.save(tmp_path / "neg.npy", np.array([[-1, 0], [5, 2]], np.int32))
    out = read_mask(tmp_path / "neg.npy", label_map={-1: 255, 5: 1})  # a negative ignore label remapped
    np.testing.assert_array_equal(out, [[255, 0], [1, 2]])
    big = np.array([[0, 70_000], [3, 70_000]], np.int64)
    np.save(tmp_path / "big.npy", big)
    np.testing.assert_array_equal(read_mask(tmp_path / "big.npy", label_map={70_000: 4}), [[0, 4], [3, 4]])

    for bad in ({1: -1}, {1.5: 1}, {1: True}):
        with pytest.raises(WeightmapsError, match="label_map"):
            open_source(tmp_path, label_map=bad)  # type: ignore[arg-type]


label_arrays = st.sampled_from([np.uint8, np.uint16, np.int32, np.int64]).flatmap(
    lambda dtype: hnp.arrays(
        dtype=dtype,
        shape=hnp.array_shapes(min_dims=1, max_dims=2, max_side=12),
        elements=st.integers(0, min(300, np.iinfo(dtype).max)),
    )
)


@given(
    arr=label_arrays,
    mapping=st.dictionaries(st.integers(-5, 310), st.integers(0, 70_000), max_size=6),
)
def test_label_map_lookup_table_equals_binary_search(arr: np.ndarray, mapping: dict[int, int]) -> None:
    lm = tuple(sorted(mapping.items()))
    if not lm:
        return
    fast = _map_labels_lut(arr, lm, int(arr.max(initial=0)) + 1)
    general = _map_labels_search(arr, lm)
    assert fast.dtype == general.dtype
    np.testing.assert_array_equal(fast, general)
    expected = np.vectorize(lambda v: mapping.get(int(v), int(v)), otypes=[np.int64])(arr)
    np.testing.assert_array_equal(general.astype(np.int64), expected)


# --------------------------------------------------------------------------------------------------
# Pickling, fingerprints, digests
# --------------------------------------------------------------------------------------------------


def test_sources_pickle_and_read_identically_in_worker_processes(tmp_path: Path) -> None:
    for i in range(3):
        save_png(tmp_path / "files" / f"m{i}.png", (labels(high=2) * 255).astype(np.uint8))
    files = open_source(tmp_path / "files", label_map={255: 1})
    data = labels((3, 5, 6), dtype=np.uint16)
    arr = zarr.create_array(tmp_path / "z.zarr", shape=data.shape, dtype=data.dtype, chunks=(1, 5, 6))
    arr[:] = data
    stores = [open_source(tmp_path / "z.zarr"), open_source(arr)]
    stores[0].read(0)  # opened here; the pickle must still carry the path only
    assert len(pickle.dumps(stores[0])) < 2000

    for src in [files, *stores]:
        clone = pickle.loads(pickle.dumps(src))
        assert clone.ids == src.ids and clone.description == src.description
        assert clone.fingerprint() == src.fingerprint()
        assert clone.label_map == src.label_map

    # One pool for everything: spawning workers is the slow part.
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        for src in [files, *stores]:
            remote = list(pool.map(src.read, range(len(src))))
            local = [src.read(i) for i in range(len(src))]
            for r, loc in zip(remote, local, strict=True):
                np.testing.assert_array_equal(r, loc)
                assert r.dtype == loc.dtype


def test_fingerprint_tracks_file_changes(tmp_path: Path) -> None:
    a = save_png(tmp_path / "a.png", labels())
    save_png(tmp_path / "b.png", labels())
    src = open_source(tmp_path)
    first = src.fingerprint()
    assert len(first) == 64 and first == src.fingerprint() == open_source(tmp_path).fingerprint()

    st_a = a.stat()
    os.utime(a, ns=(st_a.st_atime_ns, st_a.st_mtime_ns + 1_000_000_000))  # touched
    touched = src.fingerprint()
    assert touched != first
    save_png(a, labels((9, 9)))  # rewritten
    os.utime(a, ns=(st_a.st_atime_ns, st_a.st_mtime_ns + 2_000_000_000))
    assert src.fingerprint() not in (first, touched)
    save_png(tmp_path / "c.png", labels())  # a new sample
    assert open_source(tmp_path).fingerprint() != src.fingerprint()
    a.unlink()
    with pytest.raises(WeightmapsError, match=r"a\.png: cannot stat"):
        src.fingerprint()


def test_fingerprint_of_zarr_sources(tmp_path: Path) -> None:
    arr = zarr.create_array(tmp_path / "z.zarr", shape=(2, 3, 3), dtype="uint8")
    first = open_source(arr).fingerprint()
    assert first == open_source(arr).fingerprint()
    arr.attrs["note"] = "changed"
    assert open_source(tmp_path / "z.zarr").fingerprint() != first
    other = zarr.create_array(tmp_path / "y.zarr", shape=(2, 3, 3), dtype="uint8")
    assert open_source(other).fingerprint() != first


def test_mask_digest_distinguishes_shape_dtype_and_content() -> None:
    a = np.zeros((4, 6), np.uint8)
    d = mask_digest(a)
    assert len(d) == 16 and int(d, 16) >= 0
    assert d == mask_digest(a.copy())
    assert d == mask_digest(np.asfortranarray(a))  # layout does not matter, C-order bytes do
    assert d != mask_digest(a.reshape(6, 4))
    assert d != mask_digest(a.astype(np.uint16))
    b = a.copy()
    b[1, 2] = 1
    assert d != mask_digest(b)
    assert mask_digest(np.zeros((0, 4), np.uint8)) != mask_digest(np.zeros((4, 0), np.uint8))


def test_directory_links_one_rule_for_directories_and_globs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Linked directories are followed, every real directory read once; a loop is cut, said once."""
    import logging

    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (root / "c").mkdir()
    np.save(root / "a" / "x.npy", np.zeros((4, 4), np.uint8))
    np.save(root / "c" / "y.npy", np.ones((4, 4), np.uint8))
    (root / "a" / "loop").symlink_to(root / "a", target_is_directory=True)  # a loop
    (root / "b").symlink_to(root / "a", target_is_directory=True)  # a second way into a
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    np.save(outside / "z.npy", np.ones((4, 4), np.uint8))
    (root / "linked").symlink_to(outside, target_is_directory=True)  # a linked directory: followed
    for spec in (str(root), str(root / "**" / "*.npy")):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="weightmaps"):
            ids = open_source(spec).ids
        assert ids == ["a/x", "c/y", "linked/z"], spec
        warnings = [r for r in caplog.records if "loops cut" in r.getMessage()]
        assert len(warnings) == 1, spec
