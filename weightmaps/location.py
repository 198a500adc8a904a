"""Where a store lives: a local folder, or any fsspec URL (``s3://``, ``gs://``, ``az://``, ...).

A :class:`Location` is a value: the URL (or absolute local path) and the storage options, hashable
and picklable. The filesystem behind a remote one is opened lazily, once per process: fsspec's
async filesystems (s3fs, gcsfs, adlfs) are not fork-safe (filesystem_spec#835, s3fs#914), so an
instance made in a parent is never used in a forked DataLoader or pool worker; the worker opens
its own on first use.

The store needs a handful of operations that mean the same thing on a disk and in a bucket: read
a small JSON file, publish one whole (a reader sees the old one or the new one, never half),
create one only if it does not exist (the lock), list a folder, delete. On a local folder they
are the rename/hard-link/fsync dance of :mod:`weightmaps.atomic_files`; in an object store a PUT is
atomic already, and "create only if absent" is a conditional PUT (``If-None-Match: *`` on S3,
through fsspec's ``pipe_file(..., mode="create")``).

Credentials are fsspec's business: environment variables, config files, or storage options such
as ``{"key": ..., "secret": ..., "endpoint_url": ...}`` for s3fs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weightmaps.atomic_files import publish_bytes
from weightmaps.errors import WeightmapsError

__all__ = ["Location", "freeze_options", "is_url", "remote_errors"]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Filesystems that cannot be written to: a store there can be read, never created.
_READ_ONLY_PROTOCOLS = ("http", "https")


def is_url(where: Any) -> bool:
    """True for a URL such as ``s3://bucket/key`` (``file://`` counts as local)."""
    return isinstance(where, str) and bool(_URL.match(where)) and not where.startswith("file://")


@dataclass(frozen=True)
class Location:
    """A store's place: ``url`` (an absolute local path, or a URL without trailing slash) and
    ``options`` (the storage options, as sorted ``(key, JSON value)`` pairs, so it hashes)."""

    url: str
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, where: str | os.PathLike[str] | Location, storage_options: Mapping[str, Any] | None = None) -> Location:
        """The location of ``where``; storage options only mean something for a URL.

        Examples
        --------
        >>> Location.of("s3://bucket/w.zarr/", {"anon": True})
        Location(url='s3://bucket/w.zarr', options=(('anon', 'true'),))
        >>> Location.of("s3://bucket/w.zarr").parent_and_name()
        ('s3://bucket', 'w.zarr')
        """
        if isinstance(where, Location):
            return where if not storage_options else cls(where.url, freeze_options(storage_options))
        if isinstance(where, str) and where.startswith("file://"):
            where = where[len("file://"):]
        if is_url(where):
            url = str(where).rstrip("/")
            if not url.split("://", 1)[1]:
                raise WeightmapsError(f"{where}: a URL needs a bucket (or container, or host)")
            return cls(url, freeze_options(storage_options or {}))
        return cls(os.path.abspath(os.path.expanduser(os.fspath(where))))

    def canonical(self) -> Location:
        """The one name of the store this location reaches, whatever alias was given.

        Local: every symbolic link resolved (``alias/w.zarr`` linked to ``real/w.zarr``, or inside a
        linked folder, is ``real/w.zarr``), so that the lock beside the store and an overwrite's
        rename-aside act on the real folder, not on the link. Remote: the filesystem's own
        protocol and key (``s3a://b/w.zarr`` is ``s3://b/w.zarr``); keys are taken literally, as
        the object store does (``s3://b/./w.zarr`` is another store's key, not this one's).

        Examples
        --------
        >>> import os, tempfile
        >>> real = os.path.realpath(tempfile.mkdtemp())
        >>> os.symlink(real, real + "-alias")
        >>> Location.of(real + "-alias/w.zarr").canonical().url == os.path.join(real, "w.zarr")
        True
        """
        if self.is_local:
            return Location(os.path.realpath(self.url))
        fs, root = _filesystem(self)
        protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
        canonical = Location(f"{protocol}://{root}", self.options)
        return self if canonical.url == self.url else canonical

    @classmethod
    def for_filesystem(cls, url: str, storage_options: Mapping[str, Any] | None = None) -> Location:
        """The root of ``url``'s bucket (container, host): one filesystem serves every file in it.

        Examples
        --------
        >>> Location.for_filesystem("s3://bucket/masks/a.png").url
        's3://bucket'
        """
        scheme, _, rest = url.partition("://")
        return cls(f"{scheme}://{rest.split('/', 1)[0]}", freeze_options(storage_options or {}))

    # -- what it is ---------------------------------------------------------------------------

    @property
    def is_local(self) -> bool:
        return not is_url(self.url)

    @property
    def path(self) -> Path:
        """The local folder (local locations only)."""
        if not self.is_local:
            raise WeightmapsError(f"{self.url} is not a local path")
        return Path(self.url)

    @property
    def storage_options(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.options}

    @property
    def display(self) -> Path | str:
        """What messages and ``store.path`` show: the Path of a local store, else the URL."""
        return self.path if self.is_local else self.url

    @property
    def writable(self) -> bool:
        return self.is_local or self.url.split("://", 1)[0].lower() not in _READ_ONLY_PROTOCOLS

    def __str__(self) -> str:
        return self.url

    def parent_and_name(self) -> tuple[str, str]:
        parent, _, name = self.url.rpartition("/")
        return parent, name

    def sibling(self, name: str) -> Location:
        """A location beside this one (the lock lives beside its store)."""
        parent, _ = self.parent_and_name()
        return Location(f"{parent}/{name}", self.options)

    def key(self, rel: str = "") -> str:
        """The full path of ``rel`` inside this location, as its filesystem names it."""
        if self.is_local:
            return os.path.join(self.url, rel) if rel else self.url
        root = _filesystem(self)[1]
        return f"{root}/{rel}" if rel else root

    # -- the filesystem, once per process -------------------------------------------------------

    @property
    def fs(self) -> Any:
        """The fsspec filesystem of a remote location, opened in this process."""
        return _filesystem(self)[0]

    def zarr_store(self, *, read_only: bool) -> Any:
        """What zarr opens: the local Path, or a FsspecStore made in this process."""
        if self.is_local:
            return self.path
        cache_key = (self, read_only, os.getpid())
        with _LOCK:
            store = _ZARR_STORES.get(cache_key)
        if store is None:
            from zarr.storage import FsspecStore

            with remote_errors(self):
                store = FsspecStore.from_url(self.url, storage_options=self.storage_options, read_only=read_only)
            with _LOCK:
                store = _ZARR_STORES.setdefault(cache_key, store)
        return store

    # -- the operations the store needs ---------------------------------------------------------

    def exists(self, rel: str = "") -> bool:
        if self.is_local:
            return os.path.lexists(self.key(rel))
        with remote_errors(self):
            self._forget_listings()
            if rel:
                return bool(self.fs.exists(self.key(rel)))
            # A "folder" exists in a bucket when anything lies under it.
            return bool(self.fs.exists(self.key())) or bool(self.fs.find(self.key(), maxdepth=1))

    def check_container(self) -> None:
        """Raise, naming the URL, unless the bucket (container) of a remote location is there and
        answers: a run fails on this before its scan, not after."""
        if self.is_local:
            return
        bucket = self.key().split("/", 1)[0]
        with remote_errors(self):
            try:
                self.fs.info(bucket)  # one HEAD of the bucket, whatever its size
            except FileNotFoundError:
                raise WeightmapsError(f"{self.url}: the bucket {bucket!r} does not exist") from None
            except PermissionError:
                # Credentials scoped to a prefix may not see the bucket itself: the store's own
                # prefix is what the run needs (it lists it), and refused there, it is refused.
                self.fs.find(self.key(), maxdepth=1)

    def read_bytes(self, rel: str) -> bytes | None:
        """The file's bytes, or None where there is none."""
        if self.is_local:
            try:
                return Path(self.key(rel)).read_bytes()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return None
        with remote_errors(self):
            try:
                data: bytes = self.fs.cat_file(self.key(rel))
            except FileNotFoundError:
                return None
        return data

    def read_json(self, rel: str) -> Any:
        """The parsed JSON file, or None where there is none or it is not JSON."""
        try:
            data = self.read_bytes(rel)
        except OSError:
            return None
        if data is None:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return None

    def publish_json(self, rel: str, value: Any, *, exclusive: bool = False) -> bool:
        """Write a whole JSON file at once: :meth:`publish_bytes` of its text."""
        return self.publish_bytes(rel, json.dumps(value).encode("utf-8"), exclusive=exclusive)

    def publish_bytes(self, rel: str, data: bytes | memoryview, *, exclusive: bool = False) -> bool:
        """Write a whole file at once (see :func:`weightmaps.atomic_files.publish_bytes`): a reader sees
        the old file or the new one, never half, and it is durable when this returns.

        ``exclusive``: only where none exists; False when one did. On S3 that is a conditional PUT
        (``If-None-Match: *``), atomic; fsspec's default for other filesystems checks, then
        writes (a window of milliseconds between two runs); one that cannot at all raises.
        """
        if self.is_local:
            return publish_bytes(Path(self.key(rel)), data, exclusive=exclusive)
        with remote_errors(self):
            try:
                self.fs.pipe_file(self.key(rel), bytes(data), mode="create" if exclusive else "overwrite")
            except FileExistsError:
                return False
            except NotImplementedError:
                raise WeightmapsError(
                    f"{self.url}: this filesystem cannot create a file only if it is absent, which the "
                    "store's lock needs; write the store locally or to S3"
                ) from None
            except OSError as exc:
                if exclusive and _is_precondition_failed(exc):
                    return False
                raise
        return True

    def delete(self, rel: str) -> None:
        """Delete one file if it is there."""
        if self.is_local:
            Path(self.key(rel)).unlink(missing_ok=True)
            return
        with remote_errors(self), contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.key(rel))

    def delete_all(self, *, keep: tuple[str, ...] = ()) -> None:
        """Delete everything under this (remote) location except the files in ``keep``."""
        with remote_errors(self):
            self._forget_listings()
            kept = {self.key(rel) for rel in keep}
            files = [f for f in self.fs.find(self.key()) if f not in kept]
            if files:
                self.fs.rm(files)

    def list_names(self, rel: str) -> list[str]:
        """Names of the files directly in folder ``rel`` (none if it does not exist)."""
        if self.is_local:
            folder = Path(self.key(rel))
            return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        with remote_errors(self):
            self._forget_listings()
            try:
                found = self.fs.find(self.key(rel), maxdepth=1)
            except FileNotFoundError:
                return []
        return sorted(f.rsplit("/", 1)[-1] for f in found)

    def read_many_json(self, rel: str, names: list[str]) -> list[Any]:
        """The JSON files ``rel/name`` (one round of concurrent GETs in an object store)."""
        if self.is_local or not names:
            return [self.read_json(f"{rel}/{n}") for n in names]
        with remote_errors(self):
            found = self.fs.cat([self.key(f"{rel}/{n}") for n in names], on_error="omit")
        return [json.loads(found[self.key(f"{rel}/{n}")]) for n in names if self.key(f"{rel}/{n}") in found]

    def size(self) -> int:
        """Bytes of every file under this location."""
        if self.is_local:
            return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(self.url) for f in files)
        with remote_errors(self):
            self._forget_listings()
            return int(self.fs.du(self.key(), total=True))

    def _forget_listings(self) -> None:
        # fsspec filesystems cache listings; other processes (pool workers, another run) write
        # markers and shards here, so every listing must ask the server. (All of it: s3fs forgets
        # a path and its parents, not the folders below it, where the markers are.)
        self.fs.invalidate_cache()


def freeze_options(options: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Storage options as sorted ``(key, JSON value)`` pairs: hashable, as a Location holds them."""
    try:
        return tuple(sorted((str(k), json.dumps(v, sort_keys=True)) for k, v in options.items()))
    except (TypeError, ValueError) as exc:
        raise WeightmapsError(f"storage options must be JSON values: {exc}") from None


def _is_precondition_failed(exc: BaseException) -> bool:
    text = f"{exc} {exc.__cause__ or ''}"
    return "PreconditionFailed" in text or "412" in text or "At least one of the pre-conditions" in text


_LOCK = threading.Lock()
_FILESYSTEMS: dict[tuple[Location, int], tuple[Any, str]] = {}
_ZARR_STORES: dict[tuple[Location, bool, int], Any] = {}


def _filesystem(location: Location) -> tuple[Any, str]:
    """(filesystem, root path) of a remote location, made once in this process."""
    cache_key = (location, os.getpid())
    with _LOCK:
        found = _FILESYSTEMS.get(cache_key)
    if found is None:
        try:
            import fsspec
        except ImportError:
            raise WeightmapsError(
                f"{location.url}: remote stores need fsspec and the protocol's package "
                "(pip install 'weightmaps[s3]' for S3)"
            ) from None
        with remote_errors(location):
            fs, root = fsspec.core.url_to_fs(location.url, **location.storage_options)
        found = (fs, root.rstrip("/"))
        with _LOCK:
            found = _FILESYSTEMS.setdefault(cache_key, found)
    return found


@contextlib.contextmanager
def remote_errors(where: Location | str) -> Iterator[None]:
    """Turn what a remote filesystem raises into a WeightmapsError that names the URL and the cause.

    A missing bucket, refused credentials, an unknown protocol or an unreachable endpoint are
    the user's to fix (exit status 2), not crashes.
    """
    url = where.url if isinstance(where, Location) else where
    try:
        yield
    except WeightmapsError:
        raise
    except FileNotFoundError as exc:
        raise WeightmapsError(f"{url}: not found ({_reason(exc)})") from exc
    except PermissionError as exc:
        raise WeightmapsError(f"{url}: access refused ({_reason(exc)}); check the credentials "
                              "(environment, config files or --storage-option)") from exc
    except ImportError as exc:
        raise WeightmapsError(f"{url}: {exc} (pip install the fsspec package of this protocol, "
                              "e.g. 'weightmaps[s3]' for s3://)") from exc
    except ValueError as exc:
        if "Protocol not known" in str(exc) or "not known" in str(exc):
            raise WeightmapsError(f"{url}: {exc}") from exc
        raise
    except OSError as exc:
        raise WeightmapsError(f"{url}: {_reason(exc)}") from exc
    except Exception as exc:  # botocore's connection and client errors are not OSErrors
        module = type(exc).__module__ or ""
        if module.startswith(("botocore", "aiobotocore", "aiohttp", "s3fs", "gcsfs", "adlfs")):
            raise WeightmapsError(f"{url}: {type(exc).__name__}: {_reason(exc)}") from exc
        raise


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) < 400 else text[:400] + "…"
