"""Self-supervised pretraining with few labels: VICReg-pretrained + fine-tuned against random init.

Generates a synthetic set, pretrains on all of it (labels ignored), then trains on only
`--labels` fields per class twice (from the pretrained backbone and from random weights)
and scores both on the fields not used for training. Prints accuracy, the k-NN accuracy of
the features before/after pretraining, and the pretraining img/s.

    python benchmarks/bench_pretrain.py [--arch mobilenetv2|custom_cnn] [--per-class 200] [--labels 10]
                                        [--size 64] [--pretrain-epochs 30] [--epochs 20]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="custom_cnn")
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--labels", type=int, default=10, help="labelled fields per class for fine-tuning")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--look", default="all", help="synthetic look: all (real-scale fields) or closeup "
                        "(twice the magnification: cells a tiny input can resolve)")
    parser.add_argument("--pretrain-epochs", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from trainer.pretrain import PretrainConfig, pretrain
    from trainer.synth.fields import generate_dataset
    from trainer.train import TrainConfig, train

    root = args.out or Path(tempfile.mkdtemp(prefix="bench-ssl-"))
    data = root / "all"
    generate_dataset(data, per_class=args.per_class, size=args.size, seed=0, progress=False, look=args.look)
    few, rest = root / "few", root / "rest"
    for folder in sorted((data / "Original").iterdir()):
        files = sorted(folder.iterdir())
        for dst, chosen in ((few, files[: args.labels]), (rest, files[args.labels:])):
            (dst / "Original" / folder.name).mkdir(parents=True, exist_ok=True)
            for f in chosen:
                shutil.copy(f, dst / "Original" / folder.name / f.name)
    width = dict(alpha=0.35) if args.arch == "mobilenetv2" else dict(width=0.5)
    pre = pretrain(PretrainConfig(data=str(data), out=str(root / "pre"), arch=args.arch, img_size=args.size,
                                  epochs=args.pretrain_epochs, batch=args.batch, proj_dim=256, verbose=0, **width))
    print(f"pretrain ({pre['backend']}): {pre['images']} images, {pre['img_per_s']} img/s, loss "
          f"{pre['loss'][0]:.3f} -> {pre['loss'][-1]:.3f}, k-NN {pre['knn_accuracy_random_init']} -> {pre['knn_accuracy']}")
    for name, weights in (("random init", "none"), ("VICReg", pre["weights"])):
        report = train(TrainConfig(data=str(few), out=str(root / name.replace(" ", "_")), arch=args.arch,
                                   test_data=str(rest), ratios=(0.75, 0.25, 0.0), epochs=args.epochs,
                                   img_size=args.size, batch=16, weights=weights, smote=False, verbose=0,
                                   patience=args.epochs, near_dup_distance=-1, **width))
        print(f"{name:>12}: {args.labels} labels/class -> test accuracy {100 * report['accuracy']:.2f} % "
              f"(n={report['n']}, colour baseline {100 * report['baseline_accuracy']:.2f} %)")


if __name__ == "__main__":
    main()
