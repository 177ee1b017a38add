"""GPU training throughput of MobileNetV2 (alpha 1.0, 224 px) with the kit's real input pipeline.

Keras only, no TensorFlow import: it runs on a GPU box that has just JAX and Keras
(KERAS_BACKEND defaults to jax here when JAX is installed). Random uint8 images in
memory go through `trainer.pipeline.TrainBatches` (gather + `augment_batch` in
worker threads) and, for comparison, through plain `model.fit` on arrays.
Prints img/s for both and the pipeline's overhead. Target on a Hopper GPU: `leukedge train`
>= 9,500 img/s (use --mixed-precision; XLA is always on under JAX). benchmarks/bench_gpu.sh
runs both, and the pretraining; the figures it measured are in docs/trainer.md ("Measured").

    KERAS_BACKEND=jax python benchmarks/bench_train_gpu.py --mixed-precision
    python benchmarks/bench_train_gpu.py --img-size 64 --batch 8 --steps 3   # CPU rehearsal

Without a GPU and without explicit sizes it runs that small CPU rehearsal, so
`make bench` stays short on a laptop.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.models import build_model  # noqa: E402  (imports no Keras: the backend is chosen in main)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=None, help="batch size (default 256 on a GPU)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per mode (default 60 on a GPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first, incl. compilation (default 10)")
    p.add_argument("--img-size", type=int, default=None, help="image size (default 224)")
    p.add_argument("--alpha", type=float, default=1.0, help="MobileNetV2 width (default 1.0)")
    p.add_argument("--mixed-precision", action="store_true", help="mixed_bfloat16 compute")
    p.add_argument("--threads", type=int, default=None,
                   help="augmentation threads (default: what `leukedge train` uses with a GPU, "
                        "trainer.pipeline.default_workers)")
    p.add_argument("--mode", choices=("both", "pipeline", "arrays"), default="both")
    return p.parse_args()


def timed_fit(model, data, steps: int, warmup: int, batch: int, n: int) -> float:
    """img/s over `steps` optimizer steps after `warmup` untimed ones (compilation included there)."""
    if isinstance(data, tuple):  # plain arrays: one epoch = n / batch steps
        x, y = data
        per_epoch = n // batch

        def run(k):
            model.fit(x, y, batch_size=batch, epochs=max(1, math.ceil(k / per_epoch)), shuffle=True, verbose=0)
            return max(1, math.ceil(k / per_epoch)) * per_epoch
    else:
        per_epoch = len(data)

        def run(k):
            model.fit(data, epochs=max(1, math.ceil(k / per_epoch)), shuffle=False, verbose=0)
            return max(1, math.ceil(k / per_epoch)) * per_epoch

    run(warmup)
    np.asarray(model.trainable_variables[0])  # wait for the device to finish the warm-up
    t0 = time.perf_counter()
    done = run(steps)
    np.asarray(model.trainable_variables[0])
    return done * batch / (time.perf_counter() - t0)


def feed_test(x, y, batch: int) -> None:
    """Feed test (no model): img/s the pipeline alone delivers per thread count. Not the thread count
    to train with: threads beyond two feed faster alone but train slower, as their Python work
    contends with the training loop (docs/trainer.md, "Measured")."""
    from trainer.pipeline import TrainBatches  # imports keras: after main has chosen the backend

    rates = {}
    for threads in (t for t in (2, 4, 8, 16) if t <= max(2, os.cpu_count() or 2)):
        ds = TrainBatches(x, y, batch, seed=1, drop_remainder=True, threads=threads)
        ds[0]
        t0, n = time.perf_counter(), 0
        for _ in range(2):
            for i in range(len(ds)):
                ds[i]
                n += 1
            ds.on_epoch_end()
        rates[threads] = n * batch / (time.perf_counter() - t0)
        ds.close()
    print("pipeline alone (gather + augment_batch): "
          + ", ".join(f"{t} threads {r:,.0f} img/s" for t, r in rates.items()))


def gpu_devices(keras) -> list:
    try:
        return keras.distribution.list_devices("gpu")
    except RuntimeError:  # JAX raises when it has no GPU platform
        return []


def main() -> int:
    args = parse()
    if importlib.util.find_spec("jax") is not None:
        os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras  # after KERAS_BACKEND is set

    from trainer.pipeline import TrainBatches, default_workers  # imports keras

    gpus = gpu_devices(keras)
    explicit = any(v is not None for v in (args.batch, args.steps, args.img_size))
    if not gpus and not explicit:
        print("no GPU found: CPU rehearsal at 64 px, batch 8, 3 steps (pass sizes to override)")
        args.batch, args.steps, args.warmup, args.img_size = 8, 3, 2, 64
    batch, size = args.batch or 256, args.img_size or 224
    steps, warmup = args.steps or 60, args.warmup or 10
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    print(f"backend {keras.backend.backend()}, devices {gpus or keras.distribution.list_devices()}, "
          f"MobileNetV2 alpha {args.alpha} at {size} px, batch {batch}, "
          f"{'mixed_bfloat16' if args.mixed_precision else 'float32'}")
    rng = np.random.default_rng(0)
    n = batch * 16  # 16 distinct batches in memory, reshuffled every epoch
    x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, 4, n).astype(np.int32)
    feed_test(x, y, batch)
    threads = args.threads or default_workers(bool(gpus))
    results = {}
    for mode in ("arrays", "pipeline"):
        if args.mode not in ("both", mode):
            continue
        keras.utils.set_random_seed(0)
        model = build_model("mobilenetv2", size, alpha=args.alpha, weights="none")
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                      jit_compile=True if keras.backend.backend() == "jax" else "auto")
        data = (x, y) if mode == "arrays" else TrainBatches(x, y, batch, seed=0, drop_remainder=True, threads=threads)
        results[mode] = timed_fit(model, data, steps, warmup, batch, n)
        extra = f", {threads} threads" if mode == "pipeline" else ""
        print(f"{mode:>8}: {results[mode]:9.1f} img/s  ({steps} steps of {batch} after {warmup} warm-up{extra})")
        del model
    if len(results) == 2:
        overhead = (results["arrays"] / results["pipeline"] - 1) * 100
        print(f"pipeline overhead vs plain arrays: {overhead:+.1f} % (augmentation included; target <= 10 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
