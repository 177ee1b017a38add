"""trainer.pipeline: repeatable batches whatever the thread count, a bounded prefetch, workers sized to the cores."""

from __future__ import annotations

import numpy as np
import pytest

from trainer import pipeline
from trainer.pipeline import TrainBatches, default_workers


def _data(n=40, size=16):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), rng.integers(0, 4, n)


def _epochs(ds: TrainBatches, n_epochs: int) -> list:
    out = []
    for _ in range(n_epochs):
        out.extend(ds[i] for i in range(len(ds)))
        ds.on_epoch_end()
    ds.close()
    return out


def test_batches_do_not_depend_on_threads_or_prefetch():
    x, y = _data()
    plain = _epochs(TrainBatches(x, y, 8, seed=3, threads=0), 2)
    for threads, prefetch in [(1, None), (3, 1), (2, 7)]:
        got = _epochs(TrainBatches(x, y, 8, seed=3, threads=threads, prefetch=prefetch), 2)
        assert len(got) == len(plain) == 10
        for (xa, ya), (xb, yb) in zip(plain, got):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(plain[:5], plain[5:]))  # epochs differ


def test_prefetch_is_bounded_across_epochs():
    x, y = _data()
    ds = TrainBatches(x, y, 8, seed=0, threads=1)
    assert ds.prefetch == 2
    for _ in range(2):
        for i in range(len(ds)):
            ds[i]
            assert len(ds._pending) <= ds.prefetch
        ds.on_epoch_end()
    ds.close()


@pytest.mark.parametrize("cores,accelerated,want", [(2, False, 1), (16, False, 1), (2, True, 1),
                                                    (3, True, 2), (16, True, 2), (1, True, 1)])
def test_default_workers_follow_the_cores_left(monkeypatch, cores, accelerated, want):
    monkeypatch.setattr(pipeline.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert default_workers(accelerated) == want
