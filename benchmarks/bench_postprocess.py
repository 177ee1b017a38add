"""What the bundle's post-processing does on a synthetic set with a rare class.

Generates a synthetic set where Benign has a third of the other classes' fields, trains
with SMOTE (so the model's prior is uniform, not the data's), converts to int8 and prints
what the converter fitted on validation and measured on test: accuracy plain / with TTA /
as the box decides, ECE before/after, the sample-level figures of both pooling rules.

    python benchmarks/bench_postprocess.py [--per-class 60] [--size 64] [--epochs 6] [--arch custom_cnn]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from converter.convert import convert
from trainer.synth.fields import generate_dataset
from trainer.train import TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--arch", default="custom_cnn")
    parser.add_argument("--out", type=Path, default=None, help="keep the data, run and bundle here")
    args = parser.parse_args()

    root = args.out or Path(tempfile.mkdtemp(prefix="bench-pp-"))
    data = root / "data"
    generate_dataset(data, per_class=args.per_class, size=args.size, seed=0, progress=False)
    for f in sorted((data / "Original" / "Benign").iterdir())[args.per_class // 3:]:
        f.unlink()
    t0 = time.perf_counter()
    report = train(TrainConfig(data=str(data), out=str(root / "run"), arch=args.arch, epochs=args.epochs,
                               img_size=args.size, batch=16, weights="none", alpha=0.35, smote=True, verbose=0,
                               workers=1, bn_recal_images=128))
    print(f"train {time.perf_counter() - t0:.0f} s; float test accuracy {100 * report['accuracy']:.2f} %, "
          f"colour baseline {100 * report['baseline_accuracy']:.2f} %")
    convert(root / "run", root / "bundle", formats=("tflite-int8",), max_drop=100.0, progress=False,
            echo=lambda _m: None)
    v = json.loads((root / "bundle" / "validation.json").read_text())
    pp = v["postprocess"]
    print(f"fitted: {pp['params']}\nmodel prior {pp['model_prior']}, expected prior {pp['expected_prior']}")
    print(f"validation: plain acc {100 * pp['val']['accuracy']:.2f} %, ECE {100 * pp['val']['ece_before']:.2f} %; "
          f"without TTA box {json.dumps(pp['val']['without_tta'])}; with TTA box {json.dumps(pp['val']['with_tta'])}")
    t = pp.get("test", {})
    print(f"test ({v['split']}): accuracy {100 * t['accuracy']:.2f} %, with TTA {100 * t['accuracy_tta']:.2f} %, "
          f"box {100 * t['accuracy_box']:.2f} %; ECE {100 * t['ece']:.2f} % -> {100 * t['ece_box']:.2f} %")
    s = pp["samples_test"]
    for m in ("mean_prob", "mean_log_prob"):
        print(f"samples {m}: accuracy {100 * s[m]['accuracy']:.2f} %, ECE {100 * s[m]['ece']:.2f} %, "
              f"refer rate {100 * s[m]['refer_rate']:.1f} %")
    print(f"chosen pooling {pp['params']['pool']}; bundle {root / 'bundle'}")


if __name__ == "__main__":
    main()
