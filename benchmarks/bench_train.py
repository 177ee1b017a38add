"""CPU training throughput of both models, and the input pipeline's overhead against plain fit.

For each architecture: img/s of `model.fit` on in-memory uint8 arrays (no
augmentation) and through the kit's pipeline (`trainer.pipeline.TrainBatches`:
shuffle + gather + `augment_batch` in threads), measured alternately and best of
`--repeats` each, as the machine may be shared. Overhead = arrays / pipeline - 1;
target <= 10 %. Same compiled model for both modes, so only the input differs.

    python benchmarks/bench_train.py [--img-size 128 --batch 32 --steps 24 --threads N]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.bench_train_gpu import timed_fit  # noqa: E402
from trainer.device import jit_compile  # noqa: E402
from trainer.models import build_model  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--img-size", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=24, help="timed steps per measurement")
    p.add_argument("--threads", type=int, default=None,
                   help="pipeline threads (default: trainer.pipeline.default_workers on CPU, as leukedge train)")
    p.add_argument("--repeats", type=int, default=2, help="alternating measurements per mode (best counts)")
    p.add_argument("--archs", default="custom_cnn,mobilenetv2")
    args = p.parse_args()

    import keras  # start-up cost

    from trainer.pipeline import TrainBatches, default_workers  # imports keras

    size, batch = args.img_size, args.batch
    threads = args.threads if args.threads is not None else default_workers(False)
    n = batch * 8
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, 4, n).astype(np.int32)
    print(f"backend {keras.backend.backend()}, {os.cpu_count()} CPUs, {size} px, batch {batch}, "
          f"{threads} pipeline threads, {args.steps} timed steps, best of {args.repeats}, "
          f"load average {os.getloadavg()[0]:.1f}")
    for arch in args.archs.split(","):
        keras.utils.set_random_seed(0)
        model = build_model(arch, size, alpha=1.0, weights="none")
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=jit_compile())
        data = TrainBatches(x, y, batch, seed=0, drop_remainder=True, threads=threads)
        best = {"arrays": 0.0, "pipeline": 0.0}
        for r in range(args.repeats):
            for mode in best:
                warmup = 3 if r == 0 else 1
                rate = timed_fit(model, (x, y) if mode == "arrays" else data, args.steps, warmup, batch, n)
                best[mode] = max(best[mode], rate)
        data.close()
        overhead = (best["arrays"] / best["pipeline"] - 1) * 100
        print(f"{arch:>12}: arrays {best['arrays']:7.1f} img/s, pipeline {best['pipeline']:7.1f} img/s, "
              f"overhead {overhead:+.1f} % (target <= 10 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
