"""The two classifiers of the paper: MobileNetV2 with a new head, and a custom CNN.

Both take uint8 RGB (H, W, 3) exactly as the camera delivers it after crop/resize;
scaling to the network's range is a `Rescaling` layer inside the model, so the int8
TFLite input is raw bytes. Only standard Keras layers are used (no Lambda), so a
model trained under JAX loads under TensorFlow and converts to TFLite/ONNX.

Batch normalisation runs with momentum 0.9 (Keras' MobileNetV2 uses 0.999): the
moving statistics then follow the weights within a few dozen steps instead of
thousands, one half of the cure for the batch-norm trap (see trainer/train.py for
the other half, recomputing the statistics before every validation).

This module imports Keras lazily inside functions only where that matters; it never
imports TensorFlow, so it works on a JAX-only GPU box.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

from edge.errors import BadInput

log = logging.getLogger(__name__)

BASE_NAME = "mobilenetv2_base"
BN_MOMENTUM = 0.9
# Fine-tuning unfreezes the base from this block upwards (blocks 6-16 + the last 1x1
# conv: the upper two thirds of the layers, ~85 % of the parameters).
FINE_TUNE_FROM = "block_6_expand"
IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
CNN_FILTERS = (32, 64, 128, 256)
SIZE_OPTIONS = ("alpha", "width", "cnn_depth")  # the options that size a network; each belongs to one arch


class Built(NamedTuple):
    model: object  # keras.Model
    weights: str  # where the starting weights came from: "imagenet", "none", "file:<name>"


@dataclass(frozen=True)
class Arch:
    """Everything the trainer knows about one architecture; every per-arch rule reads this record.

    `base` is set for a network built around a separately weighted pretrained base (named
    BASE_NAME): --weights then means the base's weights (ImageNet or a no-top file),
    training runs head-then-fine-tune with the base's batch norm frozen from
    `fine_tune_from` up, and pretraining saves the base alone. Without one, --weights is
    a file of the whole classifier and pretraining saves the whole classifier.
    """

    name: str
    scale: tuple[float, float]  # Rescaling of the uint8 input: (scale, offset)
    features: Callable  # (scaled input, img_size, alpha, weights, dropout, width, cnn_depth) -> (features, source)
    options: tuple[str, ...]  # which of SIZE_OPTIONS size it (the others are reported as None)
    small: dict  # the sizing of a small, quick model (the few-label comparison)
    layer_hint: str  # a word in its layer names: recognises a run whose records do not name it
    base: Callable | None = None  # (img_size, alpha, weights) -> (keras base model, weights source)
    fine_tune_from: str | None = None  # the base's first layer that fine-tuning trains


def architecture(name: str) -> Arch:
    """The record of `name`; BadInput naming the choices when there is none."""
    if name not in ARCHITECTURES:
        raise BadInput(f"--arch {name!r}: unknown architecture (choose from {', '.join(ARCHS)})")
    return ARCHITECTURES[name]


def sizing(arch: str, config) -> dict:
    """{alpha, width, cnn_depth} for a report: `config`'s value for the options that size `arch`, None for the rest."""
    options = architecture(arch).options
    return {name: getattr(config, name) if name in options else None for name in SIZE_OPTIONS}


def build_model(arch: str, img_size: int = 224, num_classes: int = 4, alpha: float = 1.0,
                weights: str = "none", dropout: float = 0.2, width: float = 1.0, cnn_depth: int = 2):
    """An uncompiled keras.Model taking uint8 (img_size, img_size, 3), softmax over classes."""
    return build(arch, img_size, num_classes, alpha, weights, dropout, width, cnn_depth).model


def build(arch: str, img_size: int = 224, num_classes: int = 4, alpha: float = 1.0,
          weights: str = "none", dropout: float = 0.2, width: float = 1.0, cnn_depth: int = 2) -> Built:
    """Like build_model, but also says which starting weights were actually used.

    weights: "none" (random), "imagenet" (Keras cache or network), "auto" (ImageNet
    when it can be had, otherwise random with a warning), or a path to a local
    weights .h5 (for MobileNetV2 a no-top ImageNet-style file). `alpha` scales
    MobileNetV2's width, `width` the custom CNN's filters (1.0 = 32-64-128-256),
    `cnn_depth` its convolutions per block after the first (1 = the paper's design).
    """
    import keras

    record = architecture(arch)
    if img_size < 32:
        raise BadInput(f"--img-size {img_size}: must be at least 32 px")
    if cnn_depth not in (1, 2):
        raise BadInput(f"--cnn-depth {cnn_depth}: must be 1 (the paper's one convolution per block) or 2")
    inputs = keras.Input(shape=(img_size, img_size, 3), dtype="uint8", name="image")
    scale, offset = record.scale
    x = keras.layers.Rescaling(scale, offset=offset, name="scale")(inputs)
    x, source = record.features(x, img_size, alpha, weights, dropout, width, cnn_depth)
    # float32 softmax even under mixed precision: probabilities must sum to one.
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="probs")(x)
    model = keras.Model(inputs, outputs, name=f"leukedge_{arch}")
    if record.base is None:  # --weights is a file of the whole classifier
        source = _load_model_weights(model, weights)
    set_bn_momentum(model, BN_MOMENTUM)
    return Built(model, source)


def encoder(arch: str, img_size: int, num_classes: int, alpha: float = 1.0, width: float = 1.0,
            cnn_depth: int = 2):
    """For pretraining, from random weights: (uint8 image -> pooled features, the model whose weights to save).

    With a pretrained base the saved model is the base alone (its Keras batch-norm momentum
    kept), which `build(weights=PATH)` loads as a no-top file; otherwise it is the whole
    classifier with an untrained head.
    """
    import keras

    record = architecture(arch)
    if record.base is not None:
        inputs = keras.Input((img_size, img_size, 3), dtype="uint8", name="image")
        base, _ = record.base(img_size, alpha, "none")
        scale, offset = record.scale
        x = keras.layers.Rescaling(scale, offset=offset, name="scale")(inputs)
        pooled = keras.layers.GlobalAveragePooling2D(name="pool")(base(x))
        return keras.Model(inputs, pooled, name="encoder"), base
    full = build_model(arch, img_size, num_classes, width=width, cnn_depth=cnn_depth)
    return keras.Model(full.inputs, full.get_layer("pool").output, name="encoder"), full


def _mobilenet_features(x, img_size, alpha, weights, dropout, width, cnn_depth):
    import keras

    base, source = mobilenet_base(img_size, alpha, weights)
    x = base(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.layers.Dropout(dropout, name="dropout")(x), source


def _cnn_features(x, img_size, alpha, weights, dropout, width, cnn_depth):
    import keras

    x = _cnn_body(x, width, cnn_depth)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    x = keras.layers.Dense(max(8, int(128 * width)), activation="relu", name="head_dense")(x)
    return keras.layers.Dropout(dropout, name="head_dropout")(x), "none"


def _cnn_body(x, width: float = 1.0, depth: int = 2):
    """The paper's custom CNN: stacked Conv2D + BN + ReLU blocks, each closed by max pooling.

    Filters 32-64-128-256; one convolution in the first block (it runs at full
    resolution, where a second one would double the cost), `depth` in the others
    (2 by default; 1 is the paper's design and far cheaper: docs/trainer.md has the cost of each).
    """
    import keras

    for b, filters in enumerate(CNN_FILTERS, start=1):
        filters = max(4, int(filters * width))
        for c in range(1 if b == 1 else depth):
            name = f"block{b}_conv{c + 1}"
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
            x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
            x = keras.layers.ReLU(name=f"{name}_relu")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    return x


def mobilenet_base(img_size: int, alpha: float, weights: str):
    """Keras' MobileNetV2 without its top, named BASE_NAME; (model, weights source) as `build` explains."""
    import keras

    def make(w):
        return keras.applications.MobileNetV2(include_top=False, alpha=alpha, weights=w,
                                              input_shape=(img_size, img_size, 3), name=BASE_NAME)

    if weights in ("none", None):
        return make(None), "none"
    if weights in ("imagenet", "auto"):
        try:
            if alpha not in IMAGENET_ALPHAS:
                raise ValueError(f"no ImageNet weights for alpha {alpha} (have {IMAGENET_ALPHAS})")
            return make("imagenet"), "imagenet"
        except Exception as exc:  # noqa: BLE001 - offline, no cache, or an unsupported alpha
            reason = str(exc).splitlines()[0][:240] if str(exc) else type(exc).__name__
            if weights == "imagenet":
                raise BadInput(f"--weights imagenet: cannot get ImageNet weights ({reason}); "
                               "use --weights PATH to a local no-top .h5 or --weights none") from None
            log.warning("ImageNet weights unavailable (%s): MobileNetV2 starts from random weights", reason)
            return make(None), "none"
    path = _weights_path(weights)
    try:
        return make(str(path)), f"file:{path.name}"
    except Exception as exc:  # noqa: BLE001 - h5py/keras raise many types for a wrong file
        raise BadInput(f"--weights {path}: does not fit MobileNetV2 alpha {alpha} without top "
                       f"({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})") from None


def _load_model_weights(model, weights: str) -> str:
    if weights in ("none", "auto", None):
        return "none"
    if weights == "imagenet":
        raise BadInput("--weights imagenet: the custom CNN has no ImageNet weights (use none or a PATH)")
    path = _weights_path(weights)
    try:
        model.load_weights(str(path))
    except Exception as exc:  # noqa: BLE001
        raise BadInput(f"--weights {path}: does not fit this custom CNN ({type(exc).__name__})") from None
    return f"file:{path.name}"


def _weights_path(weights: str) -> Path:
    path = Path(weights)
    if not path.is_file():
        raise BadInput(f"--weights {weights}: no such file (expected auto, imagenet, none or a .h5 path)")
    if not path.name.endswith(".h5"):
        raise BadInput(f"--weights {weights}: expected a Keras weights .h5 file")
    return path


ARCHITECTURES: dict[str, Arch] = {
    "mobilenetv2": Arch("mobilenetv2", scale=(1.0 / 127.5, -1.0), features=_mobilenet_features, options=("alpha",),
                        small={"alpha": 0.35}, layer_hint="mobilenet", base=mobilenet_base,
                        fine_tune_from=FINE_TUNE_FROM),
    "custom_cnn": Arch("custom_cnn", scale=(1.0 / 255.0, 0.0), features=_cnn_features, options=("width", "cnn_depth"),
                       small={"width": 0.5}, layer_hint="block1_conv1"),
}
ARCHS = tuple(ARCHITECTURES)


# --------------------------------------------------------------------------- layer helpers


def walk_layers(model):
    """Every layer, descending into nested models (the MobileNetV2 base)."""
    import keras

    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from walk_layers(layer)


def bn_layers(model) -> list:
    import keras

    return [layer for layer in walk_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]


def set_bn_momentum(model, momentum: float) -> None:
    for layer in bn_layers(model):
        layer.momentum = momentum


def freeze_base(model) -> None:
    """Phase 1 with pretrained weights: only the new head trains."""
    model.get_layer(BASE_NAME).trainable = False


def unfreeze_upper_base(model, from_layer: str = FINE_TUNE_FROM) -> int:
    """Phase 2: train the base from `from_layer` upwards; returns how many layers train.

    Batch-norm layers stay frozen, and so in inference mode, as the Keras
    fine-tuning guide advises: their ImageNet statistics must not be overwritten by
    the first small batches of smear images.
    """
    import keras

    base = model.get_layer(BASE_NAME)
    base.trainable = True
    names = [layer.name for layer in base.layers]
    if from_layer not in names:
        raise ValueError(f"{from_layer!r} is not a layer of {base.name}")
    start = names.index(from_layer)
    n = 0
    for i, layer in enumerate(base.layers):
        layer.trainable = i >= start and not isinstance(layer, keras.layers.BatchNormalization)
        n += int(layer.trainable and bool(layer.weights))
    return n
