"""Files behind fsspec URLs: one filesystem per protocol, bucket and options per process, whole-file
and range reads, listings turned into sizes and versions, URL arithmetic.

:mod:`weightmaps.readers` decodes what :func:`fetch` returns; :mod:`weightmaps.sources` lists inputs
with :func:`infos` and names samples with the URL helpers. Every remote call goes through
:func:`weightmaps.location.remote_errors`, so a missing bucket, refused credentials or an unknown
protocol become a :class:`~weightmaps.errors.WeightmapsError` naming the URL.
"""

from __future__ import annotations

import contextlib
import posixpath
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from weightmaps.errors import WeightmapsError
from weightmaps.location import Location, freeze_options, remote_errors

__all__ = ["fetch", "filesystem", "prefetched", "infos", "names_container", "normalize_url", "under", "url_join",
           "url_parent", "url_relative", "version"]

# Version fields of an fsspec info dict, best first: an ETag (S3, GCS, Azure, HTTP) or checksum,
# else a modification time.
_VERSION_FIELDS = (
    "ETag", "etag", "Content-MD5", "Digest",
    "LastModified", "Last-Modified", "last_modified", "mtime", "updated", "modified", "created",
)


def filesystem(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """This process's fsspec filesystem for ``url``, and the path it names ``url`` by.

    One filesystem per protocol, host (bucket) and storage options, opened on first use in each
    process (:attr:`weightmaps.location.Location.fs`), so a forked worker never uses its parent's.

    Raises
    ------
    WeightmapsError
        Unknown protocol, its package not installed, or storage options that are not JSON values;
        the message names ``url``.
    """
    where = Location.for_filesystem(url, storage_options)
    try:
        fs = where.fs
    except WeightmapsError as e:
        message = str(e)
        if message.startswith(f"{where.url}:"):
            message = url + message[len(where.url):]
        raise WeightmapsError(message) from e.__cause__
    from fsspec.core import strip_protocol  # the public form of the filesystem's own strip, by the URL's protocol

    return fs, strip_protocol(url)


# What the filesystems say when the bucket itself is missing (S3 and its clones, GCS, Azure): the
# error's words, never the path, which may well contain "bucket" (s3://my-bucket/...).
_MISSING_CONTAINER = ("nosuchbucket", "bucket does not exist", "containernotfound", "container does not exist")


def names_container(exc: BaseException) -> bool:
    """True when a FileNotFoundError says the bucket (container) is missing, not just the file."""
    text = " ".join(str(e) for e in (exc, exc.__cause__, exc.__context__) if e is not None).lower()
    return any(words in text for words in _MISSING_CONTAINER)


def fetch(url: str, storage_options: Mapping[str, Any] | None = None, *, start: int | None = None,
          end: int | None = None) -> bytes:
    """The bytes of remote file ``url`` (``[start, end)`` only, when given).

    Raises
    ------
    WeightmapsError
        ``f"{url}: no such file"``; a missing bucket, refused access, an unreachable endpoint:
        the URL and the cause (:func:`weightmaps.location.remote_errors`).
    """
    if start is None and end is None:
        with _PREFETCH_LOCK:
            data = _PREFETCHED.pop((url, freeze_options(storage_options or {})), None)
        if data is not None:
            return data
    fs, key = filesystem(url, storage_options)
    with remote_errors(url):
        try:
            data = fs.cat_file(key, start=start, end=end)
        except (FileNotFoundError, IsADirectoryError) as e:
            if isinstance(e, FileNotFoundError) and names_container(e):
                raise
            raise WeightmapsError(f"{url}: no such file") from e
    return bytes(data)


# Files fetched ahead by `prefetched`, taken (once) by `fetch`: (url, frozen options) -> bytes.
_PREFETCHED: dict[tuple[str, tuple[tuple[str, str], ...]], bytes] = {}
_PREFETCH_LOCK = threading.Lock()


@contextlib.contextmanager
def prefetched(urls: Sequence[str], storage_options: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Fetch ``urls`` together (one round of concurrent GETs), for :func:`fetch` to take in the
    ``with`` block; whatever is not taken is dropped at its end.

    A worker that reads a shard's masks one GET after another waits one round trip per mask; an
    object store answers many at once. A file that fails here is simply not prefetched: its
    :func:`fetch` fetches it again and raises what it raises, named, in its turn.
    """
    frozen = freeze_options(storage_options or {})
    taken: list[tuple[str, tuple[tuple[str, str], ...]]] = []
    buckets: dict[str, tuple[Any, dict[str, str]]] = {}  # bucket -> (filesystem, {key: url})
    for url in urls if len(urls) > 1 else ():
        fs, key = filesystem(url, storage_options)
        buckets.setdefault(Location.for_filesystem(url).url, (fs, {}))[1][key] = url
    for fs, by_key in buckets.values():
        try:
            found = fs.cat(list(by_key), on_error="return")
        except Exception:  # noqa: BLE001 (any failure here is only a missed prefetch: fetch says why)
            continue
        with _PREFETCH_LOCK:
            for key, data in found.items():
                if isinstance(data, (bytes, bytearray)) and key in by_key:
                    _PREFETCHED[(by_key[key], frozen)] = bytes(data)
                    taken.append((by_key[key], frozen))
    try:
        yield
    finally:
        with _PREFETCH_LOCK:
            for entry in taken:
                _PREFETCHED.pop(entry, None)


def infos(
    urls: Sequence[str], roots: Sequence[str], options: Mapping[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """fsspec info (size, ETag, ...) of each of ``urls`` that is a file, by URL.

    Listings, not a request per file: one recursive listing per root in ``roots`` (the input's
    root), then one listing per folder of the URLs no root covers (over http(s), which cannot list,
    one HEAD per file). A URL missing from the result is no file.
    """
    infos: dict[str, dict[str, Any]] = {}
    wanted = set(urls)
    for root in roots:
        fs, key = filesystem(root, options)
        with remote_errors(root):
            fs.invalidate_cache(key)
            found = fs.find(key, detail=True)
        for name, info in found.items():
            rel = under(name, key)
            if rel is not None and f"{root}/{rel}" in wanted:
                infos[f"{root}/{rel}"] = info
    by_folder: dict[str, list[str]] = {}
    for url in urls:
        if url not in infos:
            by_folder.setdefault(url_parent(url), []).append(url)
    for folder, members in by_folder.items():
        fs, key = filesystem(folder, options)
        if folder.lower().startswith(("http://", "https://")):
            for url in members:
                with remote_errors(url):
                    try:
                        infos[url] = fs.info(filesystem(url, options)[1])
                    except FileNotFoundError:
                        pass
            continue
        with remote_errors(members[0]):
            fs.invalidate_cache(key)
            try:
                listed = fs.ls(key, detail=True)
            except FileNotFoundError as e:
                if names_container(e):
                    raise
                continue  # no such folder: none of its files exist
        by_name = {posixpath.basename(str(info["name"]).rstrip("/")): info for info in listed}
        for url in members:
            info = by_name.get(posixpath.basename(url))
            if info is not None:
                infos[url] = info
    return infos


def version(info: Mapping[str, Any]) -> str:
    """What changes when a remote file is rewritten: its ETag, else its modification time."""
    for name in _VERSION_FIELDS:
        value = info.get(name)
        if value is not None:
            return f"{name}={value}"
    return ""


def normalize_url(url: str) -> str:
    """``scheme://host/a/./b/../c/`` -> ``scheme://host/a/c``: one spelling per file."""
    scheme, _, rest = url.partition("://")
    host, sep, path = rest.partition("/")
    path = posixpath.normpath("/" + path) if sep and path else ""
    return f"{scheme}://{host}{path.rstrip('/')}"


def url_parent(url: str) -> str:
    """The folder of a file URL (``s3://b/x/a.png`` -> ``s3://b/x``; ``s3://b/a`` -> ``s3://b``)."""
    scheme, _, rest = url.rstrip("/").partition("://")
    return f"{scheme}://{rest.rpartition('/')[0]}" if "/" in rest else f"{scheme}://{rest}"


def url_join(base: str, entry: str) -> str:
    """A list line resolved against the list's folder URL (a leading "/": the bucket's root)."""
    if entry.startswith("/"):
        scheme, _, rest = base.partition("://")
        return normalize_url(f"{scheme}://{rest.split('/', 1)[0]}{entry}")
    return normalize_url(f"{base}/{entry}")


def url_relative(url: str, root: str) -> str:
    """``url`` relative to the folder URL ``root`` ("scheme://" alone: relative to the host)."""
    if root.endswith("://"):
        return url[len(root):]
    rel = url[len(root):].lstrip("/") if url.startswith(root + "/") else None
    if rel is None:
        raise WeightmapsError(f"{url}: not under {root}")
    return rel


def under(name: str, key: str) -> str | None:
    """The path of listed ``name`` below folder ``key``, or None when it is not below it."""
    name, key = name.rstrip("/"), key.rstrip("/")
    if key and not name.startswith(key + "/"):
        return None
    return name[len(key) + 1:] if key else name
