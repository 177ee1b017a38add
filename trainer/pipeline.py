"""The training input pipeline: in-memory uint8 images -> shuffled, augmented batches.

A `keras.utils.PyDataset` works unchanged under the TensorFlow and JAX backends
(tf.data would tie training to TensorFlow). Batches are gathered from the uint8
array and augmented with `trainer.augment.augment_batch` in worker threads (numpy
and OpenCV release the GIL), so the accelerator does not wait for them; the
benchmark `benchmarks/bench_train.py` measures the overhead against plain
`model.fit` on arrays. Every batch's randomness is derived from (seed, epoch,
batch index), so a run is repeatable whatever order the workers finish in.

No TensorFlow import here: this module runs on JAX-only GPU boxes.
"""

from __future__ import annotations

import math

import keras
import numpy as np


class TrainBatches(keras.utils.PyDataset):
    """Shuffled batches of (uint8 images, int labels), augmented when `augment` is true."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int = 0,
                 augment: bool = True, shuffle: bool = True, drop_remainder: bool = False,
                 workers: int = 2, max_queue_size: int = 8):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max_queue_size)
        if len(x) != len(y):
            raise ValueError(f"{len(x)} images but {len(y)} labels")
        if x.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {x.dtype}")
        self.x, self.y = x, np.asarray(y, dtype=np.int32)
        self.batch_size = int(batch_size)
        self.seed, self.augment, self.shuffle = seed, augment, shuffle
        self.drop_remainder = drop_remainder and len(x) >= batch_size
        self.epoch = 0
        self._order = self._permutation()

    def __len__(self) -> int:
        n = len(self.x) / self.batch_size
        return max(1, math.floor(n) if self.drop_remainder else math.ceil(n))

    def __getitem__(self, index: int):
        idx = np.sort(self._order[index * self.batch_size:(index + 1) * self.batch_size])
        xb, yb = self.x[idx], self.y[idx]
        if self.augment:
            from trainer.augment import augment_batch

            xb = augment_batch(xb, np.random.default_rng([self.seed, self.epoch, index]))
        return xb, yb

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._order = self._permutation()

    def _permutation(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.x))
        return np.random.default_rng([self.seed, self.epoch, 1 << 20]).permutation(len(self.x))
