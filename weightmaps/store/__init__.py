"""The zarr v3 store: one flat array of maps, an index, one writer per shard, markers, resume, reading.

A store is made once by the driver, filled shard by shard by whichever processes or Dask workers
hold its writer, and read by training jobs; each of those is a module of its own:

* :mod:`~weightmaps.store.format`: the on-disk layout, the root attributes and their checks;
  what every other module here speaks.
* :mod:`~weightmaps.store.info`: :class:`~weightmaps.store.info.StoreInfo`, what writer and
  reader both tell (ids, shapes, parameters, markers).
* :mod:`~weightmaps.store.writer`: :class:`StoreWriter`: a shard and then its marker, exactly
  one writer per shard; ``finalize`` marks the store complete in one atomic step.
* :mod:`~weightmaps.store.create`: :func:`create_store` (``overwrite`` included) and
  :func:`resume_store`, each returning a writer.
* :mod:`~weightmaps.store.reader`: :func:`open_store` and :class:`WeightStore`.

A store may live in object storage (any fsspec URL, see :mod:`weightmaps.location`) with the same
promises. This package's names are all importable from ``weightmaps.store``.
"""

from weightmaps.layout import ShardTask
from weightmaps.store.create import create_store, resume_store
from weightmaps.store.format import DTYPES as DTYPES
from weightmaps.store.format import FORMAT_VERSION, marker_key
from weightmaps.store.format import StoreLocation as StoreLocation
from weightmaps.store.reader import WeightStore, open_store
from weightmaps.store.writer import StoreWriter

__all__ = [
    "FORMAT_VERSION",
    "ShardTask",
    "StoreWriter",
    "WeightStore",
    "create_store",
    "marker_key",
    "open_store",
    "resume_store",
]
