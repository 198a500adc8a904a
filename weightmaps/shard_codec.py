"""A shard of the store's ``maps`` array as bytes, assembled in one pass, exactly as zarr writes it.

zarr-python encodes a shard through its batched codec pipeline, which costs 240-320 µs of CPU per
inner chunk whatever the chunk holds (more than compressing the chunk): a 16 MiB shard of 256²
maps took 1.6-2.2x, of 1024² maps 3.2-4.1x longer through zarr than here, one thread each (2-core
VM, zarr 3.1.6; ``benchmarks/shard_write.py``).
The store's ``maps`` array has one codec chain, written by :func:`weightmaps.store.create_store`,
and its shards are simple (zarr v3's ``sharding_indexed`` codec, one dimension):

- the inner chunks in order, each its elements' little-endian bytes, compressed by zstd when the
  array says so; a chunk whose every element is the fill value (NaN: a map never written) is left
  out, as zarr's ``write_empty_chunks=False`` does;
- then the index, ``(offset, nbytes)`` as little-endian uint64 per chunk (``2**64 - 1`` twice for a
  chunk left out), followed by the crc32c of the index (``index_location: "end"``).

:meth:`ShardEncoder.from_metadata` reads the array's ``zarr.json`` and returns None for any other
chain (the writer then lets zarr write), so a store made some other way is still written right.
The bytes are the ones zarr writes (``tests/test_shard_codec.py`` compares them), and any zarr
reader reads them: the store's format does not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ShardEncoder"]

_ABSENT = np.uint64(2**64 - 1)
_LITTLE_BYTES = {"name": "bytes", "configuration": {"endian": "little"}}


@dataclass(frozen=True)
class ShardEncoder:
    """Encodes one shard of a one-dimensional sharded zarr v3 array with NaN fill value."""

    shard_elements: int
    chunk_elements: int
    dtype: np.dtype[Any]
    zstd_level: int | None  # None: the chunks are stored uncompressed
    zstd_checksum: bool = False
    separator: str = "/"

    @classmethod
    def from_metadata(cls, meta: Any) -> ShardEncoder | None:
        """The encoder of the array whose ``zarr.json`` is ``meta``, or None if this module does
        not write that kind of array (then zarr must)."""
        try:
            (shard,) = meta["chunk_grid"]["configuration"]["chunk_shape"]
            (sharding,) = meta["codecs"]
            config = sharding["configuration"]
            (chunk,) = config["chunk_shape"]
            encoding = meta["chunk_key_encoding"]
            ok = (
                meta.get("zarr_format") == 3 and meta.get("node_type") == "array" and len(meta["shape"]) == 1
                and meta["chunk_grid"]["name"] == "regular" and sharding["name"] == "sharding_indexed"
                and meta["fill_value"] == "NaN" and meta["data_type"] in ("float32", "float16")
                and not meta.get("storage_transformers")
                and encoding["name"] == "default"
                and config.get("index_location", "end") == "end"
                and config["index_codecs"] == [_LITTLE_BYTES, {"name": "crc32c"}]
                and config["codecs"][0] == _LITTLE_BYTES and len(config["codecs"]) <= 2
                and int(shard) % int(chunk) == 0
            )
            if not ok:
                return None
            level, checksum = None, False
            if len(config["codecs"]) == 2:
                compressor = config["codecs"][1]
                if compressor["name"] != "zstd":
                    return None
                level = int(compressor["configuration"]["level"])
                checksum = bool(compressor["configuration"].get("checksum", False))
            return cls(int(shard), int(chunk), np.dtype(meta["data_type"]).newbyteorder("<"), level, checksum,
                       str(encoding.get("configuration", {}).get("separator", "/")))
        except (KeyError, TypeError, ValueError):
            return None

    def key(self, shard: int) -> str:
        """The shard's key inside the array's folder (zarr's default chunk key encoding)."""
        return f"c{self.separator}{shard}"

    def encode(self, elements: np.ndarray) -> bytes | None:
        """The bytes of a shard whose first elements are ``elements`` (at most ``shard_elements``;
        the rest is fill value, NaN, where no map is), or None when all are NaN (zarr writes no
        file then)."""
        if elements.ndim != 1 or elements.size > self.shard_elements:
            raise ValueError(f"a shard holds {self.shard_elements} elements, got shape {elements.shape}")
        elements = np.ascontiguousarray(elements, dtype=self.dtype)
        n_chunks = self.shard_elements // self.chunk_elements
        index = np.full((n_chunks, 2), _ABSENT, dtype="<u8")
        compress = self._compressor()
        parts: list[bytes] = []
        offset = 0
        for i in range(-(-elements.size // self.chunk_elements)):  # the chunks ``elements`` reach
            chunk = elements[i * self.chunk_elements:(i + 1) * self.chunk_elements]
            # A chunk that holds any map starts with it or is all NaN past its end: the first
            # element settles it nearly always, without a pass over the chunk.
            if np.isnan(chunk[0]) and np.isnan(chunk).all():
                continue
            if chunk.size < self.chunk_elements:
                chunk = np.concatenate([chunk, np.full(self.chunk_elements - chunk.size, np.nan, self.dtype)])
            data = compress(chunk) if compress else chunk.tobytes()
            parts.append(data)
            index[i] = (offset, len(data))
            offset += len(data)
        if not parts:
            return None
        import google_crc32c  # zarr's own crc32c (a dependency of zarr)

        index_bytes = index.tobytes()
        parts.append(index_bytes)
        parts.append(np.uint32(google_crc32c.value(index_bytes)).astype("<u4").tobytes())
        return b"".join(parts)

    def _compressor(self) -> Any:
        if self.zstd_level is None:
            return None
        from numcodecs import Zstd  # what zarr's ZstdCodec compresses with

        return Zstd(level=self.zstd_level, checksum=self.zstd_checksum).encode
