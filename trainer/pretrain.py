"""`leukedge pretrain`: self-supervised VICReg pretraining on the lab's own images, labels ignored.

Why VICReg (Bardes et al. 2022) and not SimCLR or BYOL: SimCLR needs hundreds of negatives
per batch (large batches a 2-core box cannot hold); BYOL needs a momentum target network
and a predictor, an extra copy of the weights updated outside the optimiser, which Keras 3
expresses differently on TensorFlow and JAX. VICReg has neither: two views through one
encoder, and a loss of plain tensor ops (invariance + variance + covariance), so it trains
through an ordinary `model.fit` on either backend and works with small batches.

Views: one of the eight symmetries, a random resized crop, blur, and stain/colour jitter
strong enough that colour statistics alone cannot match two views (the shortcut of the
real set). Output: PRE/backbone.weights.h5, which `leukedge train --weights` loads (for
MobileNetV2 the no-top base; for the custom CNN the whole classifier with an untrained
head), PRE/pretrain_report.json and PRE/pretrain_loss.png.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge.errors import BadInput
from edge.manifest import LABELS
from trainer.augment import symmetry
from trainer.data import IMAGE_EXTS, Item, load_images, scan
from trainer.device import accelerated, jit_compile
from trainer.models import architecture, encoder, sizing
from trainer.plots import pyplot, save_figure
from trainer.progress import make_progress_callback
from trainer.validation import BN_RECAL_IMAGES, recalibrate_bn

WEIGHTS = "backbone.weights.h5"
LAMBDA, MU, NU = 25.0, 25.0, 1.0  # VICReg's invariance, variance, covariance weights


@dataclass
class PretrainConfig:
    data: str
    out: str
    unlabeled: list[str] = field(default_factory=list)
    arch: str = "mobilenetv2"
    img_size: int = 224
    alpha: float = 1.0
    width: float = 1.0
    cnn_depth: int = 2
    epochs: int = 50
    batch: int = 64
    lr: float = 1e-3
    proj_dim: int = 512
    subset: str = "Original"
    seed: int = 0
    workers: int | None = None  # view threads; None: as train (1 on a CPU-only box, 2 with a GPU)
    verbose: int = 1


def two_views(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One augmented view per image of a uint8 batch (N, S, S, 3); call twice for the pair.

    Per image: a random resized crop (35-100 % of the area, aspect 3/4-4/3) back to S x S,
    one of the eight symmetries, a Gaussian blur (p 0.5), then stain/colour jitter (p 0.8:
    per-channel gain x0.6-1.4 and offset +-40, contrast x0.6-1.4 about the mean, saturation
    x0-1.8 about grey) and greyscale (p 0.2). The colour steps are all affine, so they fold
    into one 3x4 matrix that cv2.transform applies with uint8 saturation: every pixel pass is
    an OpenCV call that releases the GIL, so several threads make views in parallel.
    """
    n, s = x.shape[0], x.shape[1]
    area, ratio = rng.uniform(0.35, 1.0, n), np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3), n))
    hs = np.minimum(s, np.round(s * np.sqrt(area / ratio))).astype(int)
    ws = np.minimum(s, np.round(s * np.sqrt(area * ratio))).astype(int)
    tops, lefts = rng.integers(0, s - hs + 1), rng.integers(0, s - ws + 1)
    ks, flips = rng.integers(0, 4, n), rng.integers(0, 2, n)
    blur = np.where(rng.random(n) < 0.5, rng.uniform(0.1, 1.5 * s / 64, n), 0.0)
    jitter, grey = rng.random(n) < 0.8, rng.random(n) < 0.2
    gains, offsets = rng.uniform(0.6, 1.4, (n, 3)), rng.uniform(-40, 40, (n, 3))
    contrasts, sats = rng.uniform(0.6, 1.4, n), rng.uniform(0.0, 1.8, n)
    out = np.empty_like(x)
    for i in range(n):
        t, left = tops[i], lefts[i]
        img = cv2.resize(x[i, t:t + hs[i], left:left + ws[i]], (s, s), interpolation=cv2.INTER_LINEAR)
        img = symmetry(img, int(ks[i]), int(flips[i]))
        if blur[i]:
            img = cv2.GaussianBlur(img, (0, 0), blur[i])
        jittered = (gains[i], offsets[i], contrasts[i], sats[i]) if jitter[i] else None
        cv2.transform(img, colour_matrix(cv2.mean(img)[:3], jittered, bool(grey[i])), dst=out[i])
    return out


def colour_matrix(channel_means, jitter: tuple | None, grey: bool) -> np.ndarray:
    """The view's stain/colour jitter as one 3x4 affine matrix for cv2.transform.

    jitter = (gain[3], offset[3], contrast, saturation): x -> g x + o per channel, then contrast
    about the image's mean, then saturation about each pixel's grey; `grey` then averages the
    channels. Every step is affine, so they compose exactly (a test checks it against the steps).
    """
    to_grey = np.full((3, 3), 1 / 3)
    m, off = np.eye(3), np.zeros(3)
    if jitter is not None:
        gain, offset, contrast, saturation = jitter
        mean = (np.asarray(gain) @ np.asarray(channel_means, float) + np.sum(offset)) / 3
        sat = saturation * np.eye(3) + (1 - saturation) * to_grey
        m, off = sat @ (contrast * np.diag(gain)), sat @ (contrast * np.asarray(offset) + (1 - contrast) * mean)
    if grey:
        m, off = to_grey @ m, to_grey @ off
    return np.hstack([m, off[:, None]]).astype(np.float32)


def view_pairs(x: np.ndarray, batch: int, seed: int, workers: int | None):
    """Full shuffled batches of ((view a, view b), dummy target), made ahead by `workers` threads."""
    from trainer.pipeline import TrainBatches, default_workers  # imports keras: start-up cost

    class _Pairs(TrainBatches):
        def transform(self, xb, yb, rng):
            return (two_views(xb, rng), two_views(xb, rng)), np.zeros((len(xb), 1), np.float32)

    threads = workers if workers is not None else default_workers(accelerated())
    return _Pairs(x, np.zeros(len(x), np.int32), batch, seed=seed, drop_remainder=True, threads=threads)


def vicreg_loss(_y_true, y_pred):
    """y_pred = concat(z1, z2) along features; the VICReg objective (keras.ops, any backend)."""
    from keras import ops

    z1, z2 = ops.split(ops.cast(y_pred, "float32"), 2, axis=1)
    n, d = ops.cast(ops.shape(z1)[0], "float32"), ops.cast(ops.shape(z1)[1], "float32")
    invariance = ops.mean(ops.square(z1 - z2))
    total = LAMBDA * invariance
    for z in (z1, z2):
        z = z - ops.mean(z, axis=0, keepdims=True)
        std = ops.sqrt(ops.var(z, axis=0) + 1e-4)
        cov = ops.matmul(ops.transpose(z), z) / (n - 1.0)
        off = ops.sum(ops.square(cov)) - ops.sum(ops.square(ops.diagonal(cov)))
        total = total + MU * ops.mean(ops.relu(1.0 - std)) / 2.0 + NU * off / d / 2.0
    return total


def build_encoder(cfg: PretrainConfig):
    """(encoder uint8 image -> pooled features, the model whose weights are saved): trainer.models.encoder."""
    return encoder(cfg.arch, cfg.img_size, len(LABELS), alpha=cfg.alpha, width=cfg.width, cnn_depth=cfg.cnn_depth)


def load_pool(cfg: PretrainConfig) -> tuple[np.ndarray, np.ndarray, int]:
    """(all images, labels of the labelled ones, how many are labelled): --data first, then --unlabeled."""
    found = scan(Path(cfg.data), cfg.subset)
    x_lab, y_lab, _ = load_images(found.items, cfg.img_size, progress=False)
    extra = []
    for folder in cfg.unlabeled:
        if not Path(folder).is_dir():
            raise BadInput(f"--unlabeled {folder}: not a folder")
        extra += [Item(p, LABELS[0]) for p in sorted(Path(folder).rglob("*")) if p.suffix.lower() in IMAGE_EXTS]
    x_un = load_images(extra, cfg.img_size, progress=False)[0] if extra else x_lab[:0]
    x = np.concatenate([x_lab, x_un]) if len(x_un) else x_lab
    if len(x) < 2 * 2:
        raise BadInput(f"{cfg.data}: {len(x)} readable images; self-supervised pretraining needs many more")
    return x, y_lab, len(x_lab)


def knn_accuracy(encoder, x, y, batch: int, seed: int = 0) -> float | None:
    """5-fold cross-validated 5-NN accuracy (cosine) of the encoder's features on labelled images."""
    if len(np.unique(y)) < 2 or min(np.bincount(y)[np.unique(y)]) < 5:
        return None
    from sklearn.model_selection import StratifiedKFold, cross_val_score  # heavy: start-up cost
    from sklearn.neighbors import KNeighborsClassifier

    f = np.asarray(encoder.predict(x, batch_size=batch, verbose=0), np.float64)
    f /= np.linalg.norm(f, axis=1, keepdims=True) + 1e-12
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    return float(cross_val_score(KNeighborsClassifier(5, metric="cosine"), f, y, cv=folds).mean())


def pretrain(cfg: PretrainConfig) -> dict:
    """Run VICReg; write PRE/backbone.weights.h5, pretrain_report.json, pretrain_loss.png; return the report."""
    import keras

    start = time.perf_counter()
    out = Path(cfg.out)
    if not Path(cfg.data).is_dir():
        raise BadInput(f"--data {cfg.data}: not a folder")
    architecture(cfg.arch)  # BadInput for an unknown one, before any work
    if cfg.epochs < 1 or cfg.batch < 4 or cfg.img_size < 32:
        raise BadInput("--epochs must be >= 1, --batch >= 4 and --img-size >= 32")
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.seed)
    x, y, n_lab = load_pool(cfg)
    encoder, saved = build_encoder(cfg)
    # Batch-norm moving statistics lag far behind the weights (MobileNetV2's momentum is 0.999):
    # without recalibration its inference-mode features are the same for every image, and the
    # fine-tune, whose BN layers stay frozen in inference mode, starts from nothing.
    rng = np.random.default_rng(cfg.seed)
    recal = x[rng.permutation(len(x))[:BN_RECAL_IMAGES]]  # as many as train's default
    recalibrate_bn(encoder, recal, cfg.batch)
    knn_before = knn_accuracy(encoder, x[:n_lab], y, cfg.batch, cfg.seed)
    proj = keras.Sequential([keras.layers.Dense(cfg.proj_dim), keras.layers.BatchNormalization(), keras.layers.ReLU(),
                             keras.layers.Dense(cfg.proj_dim), keras.layers.BatchNormalization(), keras.layers.ReLU(),
                             keras.layers.Dense(cfg.proj_dim)], name="projector")
    a = keras.Input(x.shape[1:], dtype="uint8", name="view_a")
    b = keras.Input(x.shape[1:], dtype="uint8", name="view_b")
    ssl = keras.Model([a, b], keras.layers.Concatenate()([proj(encoder(a)), proj(encoder(b))]), name="vicreg")
    batch = min(cfg.batch, len(x))
    steps = len(x) // batch
    schedule = keras.optimizers.schedules.CosineDecay(cfg.lr * 0.01, max(1, steps * cfg.epochs), alpha=0.01,
                                                      warmup_target=cfg.lr, warmup_steps=max(1, steps))
    ssl.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4), loss=vicreg_loss,
                jit_compile=jit_compile())  # no XLA for TensorFlow on CPU: it compiles for minutes
    # seconds per epoch (the first includes compiling the step); a line per epoch and a bar when verbose
    timer = make_progress_callback(cfg.epochs, show=bool(cfg.verbose), loss_label="VICReg loss")
    pairs = view_pairs(x, batch, cfg.seed, cfg.workers)
    try:
        fit = ssl.fit(pairs, epochs=cfg.epochs, shuffle=False, verbose=0, callbacks=[timer])
    finally:
        pairs.close()
    history, seconds = [float(v) for v in fit.history["loss"]], timer.seconds
    recalibrate_bn(encoder, recal, cfg.batch)
    weights = out / WEIGHTS
    saved.save_weights(weights)
    steady = seconds[1:] or seconds
    report = {"method": "vicreg", "arch": cfg.arch, "img_size": cfg.img_size,
              **sizing(cfg.arch, cfg),
              "images": int(len(x)), "labelled_images": int(n_lab), "epochs": cfg.epochs, "batch": batch,
              "loss": history, "img_per_s": round(steps * batch * len(steady) / max(sum(steady), 1e-9), 1),
              "knn_accuracy_random_init": knn_before, "knn_accuracy": knn_accuracy(encoder, x[:n_lab], y, cfg.batch,
                                                                                  cfg.seed),
              "weights": str(weights), "config": asdict(cfg), "backend": keras.backend.backend(),
              "wall_s": round(time.perf_counter() - start, 1)}
    report["loss_png"] = str(_plot_loss(history, out / "pretrain_loss.png"))
    (out / "pretrain_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _plot_loss(history: list[float], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(range(1, len(history) + 1), history, "o-")
    ax.set_xlabel("epoch")
    ax.set_ylabel("VICReg loss")
    return save_figure(plt, fig, path)
