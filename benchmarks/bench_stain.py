"""Cost of stain normalisation per frame at the model size (target: well under 1 ms at 224 px).

Prints p50/p95 in milliseconds for `edge.stain.normalize` alone and for the whole
`edge.pixels.preprocess` (crop + resize + normalisation) of a 640x480 camera frame,
against preprocess without normalisation.

    python benchmarks/bench_stain.py [--size 224] [--repeats 500] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from edge import stain
from trainer.synth.fields import render_field


def timings_ms(fn, repeats: int) -> tuple[float, float]:
    for _ in range(min(20, repeats)):  # warm-up: OpenCV dispatch, numpy caches
        fn()
    times = np.empty(repeats)
    for k in range(repeats):
        t0 = time.perf_counter()
        fn()
        times[k] = time.perf_counter() - t0
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 95) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=500)
    parser.add_argument("--threads", type=int, default=None, help="cv2.setNumThreads (default: OpenCV's choice)")
    args = parser.parse_args()

    from edge.manifest import InputSpec
    from edge.pixels import preprocess

    if args.threads is not None:
        cv2.setNumThreads(args.threads)
    train = np.stack([render_field(np.random.default_rng(s), "Pre", args.size) for s in range(16)])
    field = render_field(np.random.default_rng(99), "Early", args.size)
    camera = cv2.resize(render_field(np.random.default_rng(98), "Pro", 480), (640, 480))
    print(f"stain normalisation, {args.size}x{args.size} px, {args.repeats} repeats, "
          f"OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads)")
    print(f"{'what':<44}{'p50 ms':>9}{'p95 ms':>9}")
    p50, p95 = timings_ms(lambda: preprocess(camera, args.size), args.repeats)
    print(f"{'preprocess 640x480 -> model, no stain norm':<44}{p50:>9.3f}{p95:>9.3f}")
    for method in ("reinhard", "macenko"):
        norm = stain.fit_stain_norm(method, train)
        p50, p95 = timings_ms(lambda: stain.normalize(field, norm), args.repeats)
        print(f"{'normalize ' + method:<44}{p50:>9.3f}{p95:>9.3f}")
        spec = InputSpec(height=args.size, width=args.size, stain_norm=norm)
        p50, p95 = timings_ms(lambda: preprocess(camera, spec), args.repeats)
        print(f"{'preprocess 640x480 -> model, ' + method:<44}{p50:>9.3f}{p95:>9.3f}")


if __name__ == "__main__":
    main()
