"""Inputs in object storage: every input kind as an s3:// URL against a real S3 server (moto's
stand-alone server), compared with the same files on local disk: ids, arrays, spacings, messages,
fingerprints, and sources that cross process boundaries (spawn, forkserver, fork)."""

from __future__ import annotations

import functools
import multiprocessing
import pickle
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from weightmaps.errors import BadInputError, WeightmapsError
from weightmaps.readers import read_mask, read_spacing
from weightmaps.sample_data import write_dataset
from weightmaps.sources import SampleSource, open_image_source, open_source
from weightmaps.stats import open_inputs

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the fork test needs POSIX")

RNG = np.random.default_rng(7)
SPACING_3D = (0.5, 0.7, 2.0)
SPACING_2D = (0.8, 0.9)


def _labels(shape: tuple[int, ...], dtype: Any = np.uint8) -> np.ndarray:
    return RNG.integers(0, 3, shape).astype(dtype)


@pytest.fixture(scope="module")
def local_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data/masks: 3 PNGs (sample_data), sub/t.tif, sub/n.npy and, with nibabel, NIfTI volumes with
    spacing; data/images: the PNG images; data/list.txt naming some masks relatively."""
    root = write_dataset(tmp_path_factory.mktemp("remote") / "data", n=3, shape=(12, 10), num_classes=3)
    sub = root / "masks" / "sub"
    sub.mkdir()
    tifffile.imwrite(sub / "t.tif", _labels((9, 8)))
    np.save(sub / "n.npy", _labels((7, 6), np.uint16))
    try:
        import nibabel as nib
    except ImportError:
        pass
    else:
        nib.save(nib.Nifti1Image(_labels((5, 6, 4), np.int16), np.diag([*SPACING_3D, 1.0])), sub / "v.nii.gz")
        nib.save(nib.Nifti1Image(_labels((5, 6)), np.diag([*SPACING_2D, 3.0, 1.0])), sub / "w.nii")
    (root / "list.txt").write_text("# a split\nmasks/sample_00000.png\n\nmasks/sub/t.tif\n")
    return root


@pytest.fixture(scope="module")
def bucket(local_data: Path, s3_server: Any) -> str:
    """A bucket holding ``local_data`` under ``data/``; tests must not change it."""
    name = s3_server.new_bucket()
    s3_server.filesystem().put(f"{local_data}/", f"{name}/data/", recursive=True)
    return name


def _assert_same_samples(remote: SampleSource, local: SampleSource) -> None:
    assert remote.ids == local.ids
    for i in range(len(local)):
        got, want = remote.read(i), local.read(i)
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype
        assert remote.spacing(i) == local.spacing(i)


# --------------------------------------------------------------------------------------------------
# Input kinds: the same ids and samples as on disk
# --------------------------------------------------------------------------------------------------


def test_prefix_lists_recursively_with_local_ids_arrays_and_spacing(local_data: Path, bucket: str, s3_server: Any) -> None:
    so = s3_server.storage_options
    local = open_source(local_data / "masks")
    for url in (f"s3://{bucket}/data/masks/", f"s3://{bucket}/data/masks"):
        remote = open_source(url, storage_options=so)
        assert remote.description == url and remote.storage_options == so
        assert all(ref.path.startswith(f"s3://{bucket}/data/masks/") for ref in remote.samples)
        _assert_same_samples(remote, local)
    if "sub/v" in local.ids:
        assert remote.spacing(remote.ids.index("sub/v")) == SPACING_3D
        assert remote.spacing(remote.ids.index("sub/w")) == SPACING_2D
    images = open_image_source(f"s3://{bucket}/data/images", storage_options=so)
    _assert_same_samples(images, open_image_source(local_data / "images"))
    assert images.ids == [i for i in remote.ids if i.startswith("sample_")]
    # stats.open_inputs passes the options through
    assert open_inputs(f"s3://{bucket}/data/masks", None, storage_options=so).ids == local.ids


def test_glob_list_file_and_list_of_urls(local_data: Path, bucket: str, s3_server: Any, tmp_path: Path) -> None:
    so = s3_server.storage_options
    remote = open_image_source(f"s3://{bucket}/data/**/*.png", storage_options=so)
    local = open_image_source(f"{local_data}/**/*.png")
    assert len(remote) == 6 and remote.ids[:3] == ["images/sample_00000", "images/sample_00001", "images/sample_00002"]
    _assert_same_samples(remote, local)
    remote = open_source(f"s3://{bucket}/data/masks/sample_0000[02].*", storage_options=so)
    assert remote.ids == open_source(f"{local_data}/masks/sample_0000[02].*").ids == ["sample_00000", "sample_00002"]

    # A remote list file, its lines relative to its folder.
    _assert_same_samples(open_source(f"s3://{bucket}/data/list.txt", storage_options=so), open_source(local_data / "list.txt"))
    # A local list file of URLs (and one remote list naming a file by URL and one from the bucket root).
    (tmp_path / "urls.lst").write_text(f"s3://{bucket}/data/masks/sample_00001.png\ns3://{bucket}/data/masks/sub/t.tif\n")
    listed = open_source(tmp_path / "urls.lst", storage_options=so)
    assert listed.ids == ["sample_00001", "sub/t"]
    np.testing.assert_array_equal(listed.read(1), read_mask(local_data / "masks" / "sub" / "t.tif"))
    fs = s3_server.filesystem()
    fs.pipe(f"{bucket}/lists/mixed.txt", f"s3://{bucket}/data/masks/sample_00002.png\n/data/masks/sub/t.tif\n"
            "../data/./masks/sample_00000.png\n../data/masks/gone.png\n".encode())
    with pytest.raises(BadInputError, match=rf"lists/mixed\.txt:4: s3://{bucket}/data/masks/gone\.png: no such file"):
        open_source(f"s3://{bucket}/lists/mixed.txt", storage_options=so)
    mixed = open_source(f"s3://{bucket}/lists/mixed.txt", storage_options=so, on_problems="collect")
    assert mixed.ids == ["sample_00000", "sample_00002", "sub/t"] and len(mixed.problems) == 1

    # A Python list of URLs: the ids of the same list of local paths.
    names = ["sample_00000.png", "sub/n.npy"]
    remote = open_source([f"s3://{bucket}/data/masks/{n}" for n in names], storage_options=so)
    _assert_same_samples(remote, open_source([local_data / "masks" / n for n in names]))
    # A single file URL: its folder is the root.
    assert open_source(f"s3://{bucket}/data/masks/sub/n.npy", storage_options=so).ids == ["n"]


def test_remote_zarr_array(tmp_path: Path, s3_server: Any, s3_bucket: str) -> None:
    data = _labels((3, 6, 5))
    arr = zarr.create_array(tmp_path / "z.zarr", shape=data.shape, dtype=data.dtype, chunks=(1, 6, 5))
    arr[:] = data
    zarr.create_group(tmp_path / "g.zarr").create_array("labels", shape=(2, 4, 4), dtype="uint8")
    s3_server.filesystem().put(f"{tmp_path}/", f"{s3_bucket}/", recursive=True)
    so = s3_server.storage_options
    src = open_source(f"s3://{s3_bucket}/z.zarr", storage_options=so)
    assert src.ids == ["000000", "000001", "000002"]
    assert src.describe(1) == f"s3://{s3_bucket}/z.zarr[1] (id 000001)"
    _assert_same_samples(src, open_source(tmp_path / "z.zarr"))
    assert src.fingerprint() == open_source(f"s3://{s3_bucket}/z.zarr/", storage_options=so).fingerprint()
    with pytest.raises(WeightmapsError, match=rf"g\.zarr: is a zarr group, not an array; its arrays: s3://{s3_bucket}/g\.zarr/labels"):
        open_source(f"s3://{s3_bucket}/g.zarr", storage_options=so)


# --------------------------------------------------------------------------------------------------
# Errors: the local messages, naming the URL
# --------------------------------------------------------------------------------------------------


def test_bad_remote_files_give_the_local_messages_naming_the_url(tmp_path: Path, s3_server: Any, s3_bucket: str) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(bad / "rgb.png")
    (bad / "junk.png").write_bytes(b"not a png at all")
    (bad / "junk.tif").write_bytes(b"this is not a tiff")  # and a duplicate id
    (bad / "trash.tif").write_bytes(b"this is not a tiff either")
    np.save(bad / "neg.npy", np.array([[0, -1]], np.int8))
    np.save(bad / "cut.npy", _labels((30, 30)))
    (bad / "cut.npy").write_bytes((bad / "cut.npy").read_bytes()[:100])
    s3_server.filesystem().put(f"{bad}/", f"{s3_bucket}/bad/", recursive=True)
    so = s3_server.storage_options
    local = open_source(bad, on_problems="collect")
    remote = open_source(f"s3://{s3_bucket}/bad", storage_options=so, on_problems="collect")
    assert remote.ids == local.ids == ["cut", "neg", "rgb", "trash"]
    assert [str(b) for b in remote.problems] == [
        str(b).replace(str(bad), f"s3://{s3_bucket}/bad") for b in local.problems] and len(local.problems) == 2
    for i in range(len(local)):
        with pytest.raises(WeightmapsError) as want:
            local.read(i)
        with pytest.raises(WeightmapsError) as got:
            remote.read(i)
        assert str(got.value) == str(want.value).replace(str(bad), f"s3://{s3_bucket}/bad")
        assert str(got.value).startswith(f"s3://{s3_bucket}/bad/")

    # Missing files: read directly, listed, and in a fingerprint.
    with pytest.raises(WeightmapsError, match=rf"^s3://{s3_bucket}/bad/gone\.png: no such file$"):
        read_mask(f"s3://{s3_bucket}/bad/gone.png", storage_options=so)
    with pytest.raises(BadInputError) as listed:
        open_source([f"s3://{s3_bucket}/bad/rgb.png", f"s3://{s3_bucket}/bad/gone.png",
                     f"s3://{s3_bucket}/nowhere/x.png"], storage_options=so)
    assert [str(b) for b in listed.value.bad] == [
        f"s3://{s3_bucket}/bad/gone.png: no such file", f"s3://{s3_bucket}/nowhere/x.png: no such file"]
    with pytest.raises(WeightmapsError, match=r"no such file or directory"):
        open_source(f"s3://{s3_bucket}/bad/gone.png", storage_options=so)
    # An empty (or missing) prefix holds no masks, as an empty directory.
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightmapsError) as want:
        open_source(tmp_path / "empty")
    for prefix in ("nothing", "bad/deeper"):
        with pytest.raises(WeightmapsError) as got:
            open_source(f"s3://{s3_bucket}/{prefix}/", storage_options=so)
        assert str(got.value) == str(want.value).replace(str(tmp_path / "empty"), f"s3://{s3_bucket}/{prefix}/")
    with pytest.raises(WeightmapsError, match=rf"s3://{s3_bucket}/\*\*/\*\.nii: the glob matched no mask files"):
        open_source(f"s3://{s3_bucket}/**/*.nii", storage_options=so)


def test_missing_bucket_and_refused_access_name_the_url(s3_server: Any) -> None:
    so = s3_server.storage_options
    for url in ("s3://no-such-bucket-wm/masks/", "s3://no-such-bucket-wm/data/**/*.png", "s3://no-such-bucket-wm/l.txt"):
        with pytest.raises(WeightmapsError, match=r"no-such-bucket-wm.*: not found \(.*bucket does not exist"):
            open_source(url, storage_options=so)
    with pytest.raises(WeightmapsError, match=r"^s3://no-such-bucket-wm/a\.png: not found \(.*bucket does not exist"):
        read_mask("s3://no-such-bucket-wm/a.png", storage_options=so)
    with pytest.raises(WeightmapsError, match=r"s3://no-such-bucket-wm.*bucket does not exist"):
        open_source(["s3://no-such-bucket-wm/a.png"], storage_options=so)
    with pytest.raises(WeightmapsError, match=r"^nosuchproto://b/masks: .*nosuchproto"):
        open_source("nosuchproto://b/masks")

    from tests.s3server import S3Server

    refusing = S3Server(enforce_auth=True).start()
    try:
        for url in ("s3://any-bucket/masks", "s3://any-bucket/x/*.png", "s3://any-bucket/m.png"):
            with pytest.raises(WeightmapsError, match=rf"^{url.replace('*', '[*]')}: access refused"):
                open_source(url, storage_options=refusing.storage_options)
        with pytest.raises(WeightmapsError, match=r"^s3://any-bucket/m\.png: access refused"):
            read_mask("s3://any-bucket/m.png", storage_options=refusing.storage_options)
    finally:
        refusing.stop()


# --------------------------------------------------------------------------------------------------
# Fingerprint, pickling, processes
# --------------------------------------------------------------------------------------------------


def test_fingerprint_changes_when_a_remote_file_is_replaced(local_data: Path, s3_server: Any, s3_bucket: str) -> None:
    fs = s3_server.filesystem()
    fs.put(f"{local_data}/masks/", f"{s3_bucket}/masks/", recursive=True)
    so = s3_server.storage_options
    url = f"s3://{s3_bucket}/masks"
    src = open_source(url, storage_options=so)
    listed = open_source([ref.path for ref in src.samples], storage_options=so)
    first, first_listed = src.fingerprint(), listed.fingerprint()
    assert len(first) == 64 and first == src.fingerprint() == open_source(url, storage_options=so).fingerprint()
    assert first_listed == listed.fingerprint()

    # Same size, other content: the ETag tells.
    other = (read_mask(local_data / "masks" / "sample_00001.png") + 1) % 3
    path = Path(local_data.parent / "replacement.png")
    Image.fromarray(other).save(path)
    fs.put_file(str(path), f"{s3_bucket}/masks/sample_00001.png")
    assert src.fingerprint() != first
    assert listed.fingerprint() != first_listed
    assert src.fingerprint() == open_source(url, storage_options=so).fingerprint()
    np.testing.assert_array_equal(src.read(src.ids.index("sample_00001")), other)

    fs.rm_file(f"{s3_bucket}/masks/sample_00002.png")
    with pytest.raises(WeightmapsError, match=rf"s3://{s3_bucket}/masks/sample_00002\.png: cannot stat"):
        src.fingerprint()


def _read_all(source: SampleSource) -> list[tuple[np.ndarray, Any]]:
    return [(source.read(i), source.spacing(i)) for i in range(len(source))]


_FORKED: list[SampleSource] = []


def _read_inherited(job: tuple[int, int]) -> np.ndarray:
    which, i = job
    return _FORKED[which].read(i)


def test_sources_pickle_small_and_read_in_spawned_forkserver_and_forked_processes(
    local_data: Path, bucket: str, s3_server: Any, tmp_path: Path
) -> None:
    so = s3_server.storage_options
    data = _labels((2, 4, 4))
    zarr.create_array(tmp_path / "z.zarr", shape=data.shape, dtype=data.dtype)[:] = data
    s3_server.filesystem().put(f"{tmp_path}/z.zarr/", f"{bucket}/z.zarr/", recursive=True)
    files = open_source(f"s3://{bucket}/data/masks", storage_options=so, label_map={2: 5})
    store = open_source(f"s3://{bucket}/z.zarr", storage_options=so)
    expected = {id(src): _read_all(src) for src in (files, store)}  # the parent has read (and opened)

    for src in (files, store):
        blob = pickle.dumps(src)
        assert len(blob) < 4000 and b"s3fs" not in blob and b"FileSystem" not in blob and b"aiobotocore" not in blob
        clone = pickle.loads(blob)
        assert clone.ids == src.ids and clone.fingerprint() == src.fingerprint() and clone.storage_options == so

    for method in ("spawn", "forkserver"):
        with multiprocessing.get_context(method).Pool(1) as pool:
            for src in (files, store):
                got = pool.apply(_read_all, (pickle.loads(pickle.dumps(src)),))
                for (array, spacing), (want, want_spacing) in zip(got, expected[id(src)], strict=True):
                    np.testing.assert_array_equal(array, want)
                    assert array.dtype == want.dtype and spacing == want_spacing

    # Fork after the parent read: the children inherit the sources (and the parent's filesystem
    # and event loop, which they must not use) and read on their own.
    _FORKED[:] = [files, store]
    try:
        with multiprocessing.get_context("fork").Pool(2) as pool:
            jobs = [(w, i) for w, src in enumerate(_FORKED) for i in range(len(src))]
            got = pool.map(_read_inherited, jobs, chunksize=1)
    finally:
        _FORKED.clear()
    for (w, i), array in zip(jobs, got, strict=True):
        np.testing.assert_array_equal(array, expected[id((files, store)[w])][i][0])
    # ...and the parent still reads after the children are gone.
    np.testing.assert_array_equal(files.read(0), expected[id(files)][0][0])


def test_read_spacing_of_remote_nifti_equals_local(local_data: Path, bucket: str, s3_server: Any) -> None:
    pytest.importorskip("nibabel")
    so = s3_server.storage_options
    for name, spacing in (("v.nii.gz", SPACING_3D), ("w.nii", SPACING_2D)):
        url = f"s3://{bucket}/data/masks/sub/{name}"
        assert read_spacing(url, storage_options=so) == read_spacing(str(local_data / "masks" / "sub" / name)) == spacing


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_http_read_only_urls_from_a_web_server(local_data: Path) -> None:
    """http(s) URLs (read-only): a list of URLs, a list file and one file, checked and
    fingerprinted with one HEAD per file."""
    pytest.importorskip("aiohttp")  # fsspec's http filesystem
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(local_data)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        names = ["sample_00000.png", "sub/t.tif"]
        remote = open_source([f"{base}/masks/{n}" for n in names])
        _assert_same_samples(remote, open_source([local_data / "masks" / n for n in names]))
        assert len(remote.fingerprint()) == 64
        _assert_same_samples(open_source(f"{base}/list.txt"), open_source(local_data / "list.txt"))
        assert open_source(f"{base}/masks/sub/n.npy").ids == ["n"]
        with pytest.raises(BadInputError, match=r"/masks/gone\.png: no such file"):
            open_source([f"{base}/masks/gone.png"])
    finally:
        server.shutdown()
        server.server_close()


def test_prefetched_samples_are_read_from_the_fetched_bytes_then_dropped(
    local_data: Path, s3_server: Any, s3_bucket: str
) -> None:
    """One round of GETs for many samples: inside the block a read takes the fetched bytes (so it
    still reads a file deleted meanwhile), after it reads the bucket again; a file that failed to
    prefetch fails its read with the usual message."""
    fs = s3_server.filesystem()
    fs.put(f"{local_data}/masks/", f"{s3_bucket}/masks/", recursive=True)
    source = open_source(f"s3://{s3_bucket}/masks/", storage_options=s3_server.storage_options)
    local = open_source(local_data / "masks")
    assert source.remote and not local.remote
    pngs = [i for i, sid in enumerate(source.ids) if sid.startswith("sample_")]
    with source.prefetched(pngs):
        fs.rm(f"{s3_bucket}/masks/{source.ids[pngs[0]]}.png")
        np.testing.assert_array_equal(source.read(pngs[0]), local.read(pngs[0]))
        with pytest.raises(WeightmapsError, match="no such file"):
            source.read(pngs[0])  # taken once: the second read goes to the bucket
    for i in pngs[1:]:
        np.testing.assert_array_equal(source.read(i), local.read(i))
    with source.prefetched(pngs), pytest.raises(WeightmapsError, match=f"{source.ids[pngs[0]]}.png: no such file"):
        source.read(pngs[0])
    with local.prefetched(range(len(local))):  # local files: nothing to fetch
        np.testing.assert_array_equal(local.read(0), local.read(0))
