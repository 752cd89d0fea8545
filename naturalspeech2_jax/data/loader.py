"""Host-local batch iterators whose order does not depend on the topology.

Every process reads the same seeded, epoch-reshuffled example stream; global batch k is stream
positions [k*G, (k+1)*G) and process p takes the contiguous block [k*G + p*L, k*G + (p+1)*L) of it,
which is exactly the block of rows its devices hold in the global array. So every example lands at
the same global row whether the job runs as 1 process x 8 devices or 2 processes x 4 (per-row
randomness such as dropout then matches too), and an iterator's position is simply the step
(``{"next_index": step}``). That makes resume exact on any topology, data order included.
Per-example random transforms (crops) are seeded by grain from the example's index, so they
replay exactly too.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import grain
import numpy as np


def stack_batch(examples: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Default collation: stack each field (examples must already share shapes)."""
    return {k: np.stack([np.asarray(e[k]) for e in examples]) for k in examples[0]}


def make_batch_iterator(
    source: Any,
    *,
    seed: int,
    local_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    shuffle: bool = True,
    transform: Callable[[dict, np.random.Generator], dict] | None = None,
    batch_fn: Callable[[Sequence[dict]], dict] = stack_batch,
    num_threads: int = 2,
    prefetch: int = 4,
) -> grain.DatasetIterator:
    """An endless, checkpointable iterator over this host's share of every global batch.

    ``source`` is anything with ``__len__`` and ``__getitem__`` (a TFDS data source, a list) or a
    ``grain.MapDataset``. ``transform(example, rng)`` is a per-example random map (e.g. a crop).
    """
    ds = source if isinstance(source, grain.MapDataset) else grain.MapDataset.source(source)
    if len(ds) == 0:
        raise ValueError("the training data source is empty; prepare a dataset with examples.")
    if shuffle:
        ds = ds.shuffle(seed=seed)
    ds = ds.repeat()
    if transform is not None:
        ds = ds.random_map(transform, seed=seed)
    stream, local, global_batch = ds, local_batch_size, local_batch_size * process_count

    def host_example(i: int) -> dict:
        k, j = divmod(i, local)
        return stream[k * global_batch + process_index * local + j]

    ds = grain.MapDataset.range(sys.maxsize // global_batch * local).map(host_example)
    ds = ds.batch(local_batch_size, batch_fn=batch_fn)
    read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    return iter(ds.to_iter_dataset(read_options=read))
