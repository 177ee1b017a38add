"""The training input pipeline: in-memory uint8 images -> shuffled, augmented batches.

A `keras.utils.PyDataset` works unchanged under the TensorFlow and JAX backends
(tf.data would tie training to TensorFlow). Batches are gathered from the uint8
array and augmented with `trainer.augment.augment_batch` by a small thread pool
that this class owns and keeps for the whole run (numpy and OpenCV release the
GIL). It computes the next `prefetch` batches ahead, across epoch boundaries, so
the accelerator does not wait: Keras' own PyDataset workers restart their pool and
drain their queue (with a 0.1 s poll) at every epoch, which cost a third of the
throughput on a fast GPU. Every batch's randomness is derived from (seed, epoch,
batch index), so a run is repeatable whatever order the threads finish in.

Call `fit(..., shuffle=False)`: the dataset shuffles itself every epoch, and a
Keras-side shuffle of batch order would defeat the prefetch (still correct, slower).

Thread count (`default_workers`): on a CPU-only box the training step already keeps
every core busy (TensorFlow's and XLA's intra-op pools are sized to the cores), so
extra augmentation threads only steal cycles from it; one thread, a bounded number of
batches ahead, is enough (augmenting 32 images at 224 px costs a few ms against a
training step of a second or more). With an accelerator the host cores are free
except the one driving it, and two threads are used: on an H200 more were slower,
as the per-image Python work of the augmentation holds the GIL.

No TensorFlow import here: this module runs on JAX-only GPU boxes.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import keras
import numpy as np

from trainer.augment import augment_batch


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers(accelerated: bool) -> int:
    """Augmentation threads for the cores the training step leaves: two with an accelerator (when
    the box has a core besides the one driving it), one on a CPU-only box."""
    return max(1, min(2, usable_cores() - 1)) if accelerated else 1


class TrainBatches(keras.utils.PyDataset):
    """Shuffled batches of (uint8 images, int32 labels), augmented when `augment` is true.

    `jitter`: augment_batch's colour keywords (trainer.augment.STRENGTHS); None keeps its defaults."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int = 0,
                 augment: bool = True, shuffle: bool = True, drop_remainder: bool = False,
                 threads: int = 1, prefetch: int | None = None, jitter: dict | None = None):
        super().__init__()  # Keras-side workers off: this class prefetches itself
        if len(x) != len(y):
            raise ValueError(f"{len(x)} images but {len(y)} labels")
        if x.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {x.dtype}")
        self.x, self.y = x, np.asarray(y, dtype=np.int32)
        self.batch_size = int(batch_size)
        self.seed, self.augment, self.shuffle = seed, augment, shuffle
        self.jitter = dict(jitter or {})
        self.drop_remainder = drop_remainder and len(x) >= batch_size
        self.epoch = 0
        self.prefetch = prefetch if prefetch is not None else max(1, threads) + 1  # bounded: memory and cores
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="batches") if threads > 0 else None
        self._pending: dict[tuple[int, int], Future] = {}
        self._orders: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        n = len(self.x) / self.batch_size
        return max(1, math.floor(n) if self.drop_remainder else math.ceil(n))

    def __getitem__(self, index: int):
        key = (self.epoch, int(index))
        with self._lock:
            future = self._pending.pop(key, None)
            self._schedule(key)
        return future.result() if future is not None else self.make_batch(*key)

    def make_batch(self, epoch: int, index: int):
        """Batch `index` of epoch `epoch`: gather, then augment (pure function of seed, epoch, index)."""
        order = self._order(epoch)
        idx = np.sort(order[index * self.batch_size:(index + 1) * self.batch_size])
        return self.transform(self.x[idx], self.y[idx], np.random.default_rng([self.seed, epoch, index]))

    def transform(self, xb: np.ndarray, yb: np.ndarray, rng: np.random.Generator):
        """The batch Keras gets from gathered images: augmented (x, y) here; subclasses make other pairs."""
        return (augment_batch(xb, rng, **self.jitter) if self.augment else xb), yb

    def on_epoch_end(self) -> None:
        with self._lock:
            self.epoch += 1
            for key in [k for k in self._pending if k[0] < self.epoch]:
                self._pending.pop(key).cancel()
            for e in [e for e in self._orders if e < self.epoch]:
                del self._orders[e]

    def close(self) -> None:
        """Stop the prefetch threads (also done when the dataset is garbage collected)."""
        if getattr(self, "_pool", None) is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def __del__(self):
        self.close()

    def _schedule(self, key: tuple[int, int]) -> None:
        """Queue the `prefetch` batches after `key`, wrapping into the next epoch."""
        if self._pool is None:
            return
        epoch, index = key
        steps = len(self)
        for _ in range(self.prefetch):
            index += 1
            if index >= steps:
                epoch, index = epoch + 1, 0
            if (epoch, index) not in self._pending:
                self._pending[(epoch, index)] = self._pool.submit(self.make_batch, epoch, index)

    def _order(self, epoch: int) -> np.ndarray:
        order = self._orders.get(epoch)
        if order is None:
            if self.shuffle:
                order = np.random.default_rng([self.seed, epoch, 1 << 20]).permutation(len(self.x))
            else:
                order = np.arange(len(self.x))
            self._orders[epoch] = order
        return order
