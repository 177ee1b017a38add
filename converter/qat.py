"""`--qat`: quantization-aware fine-tuning of the weights, for when post-training int8 misses the gate.

tensorflow-model-optimization (the usual QAT route) does not support Keras 3, so this is
a small, explicit version of its core idea for the weights:

- Straight-through estimator by weight swapping: for every step the kernels of Conv2D,
  DepthwiseConv2D and Dense are replaced by their int8 per-channel fake-quantized values
  (symmetric, 127 levels per side, one scale per output channel: what the TFLite and Q/DQ
  converters produce), the loss and gradients are computed through the quantized weights,
  then the float weights are restored and the gradient is applied to them. The float
  weights learn to sit where their rounding hurts least.
- Per-channel symmetric quantization is unchanged by a per-channel scale, so quantizing
  the unfolded kernel equals quantizing the kernel after TFLite folds batch norm into it.
- Batch-norm layers are frozen (inference statistics) and the learning rate is small, so
  fine-tuning stays near the trained model; the best epoch on the validation split wins.

Not simulated: activation quantization. Activations stay post-training calibrated (the
same class-balanced calibration). The manifest's `qat` entry records what was run.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from trainer.augment import augment_batch
from trainer.models import walk_layers

QUANT_LAYERS = ("Conv2D", "DepthwiseConv2D", "Dense")


def fake_quant_per_channel(w: np.ndarray, kind: str) -> np.ndarray:
    """Symmetric int8 per-output-channel quantize-dequantize of a kernel (numpy, float32)."""
    axis_keep = 2 if kind == "DepthwiseConv2D" else w.ndim - 1  # depthwise: (kh, kw, in, mult)
    axes = tuple(a for a in range(w.ndim) if a != axis_keep)
    scale = np.max(np.abs(w), axis=axes, keepdims=True) / 127.0
    scale = np.where(scale == 0, 1.0, scale)
    return (np.clip(np.round(w / scale), -127, 127) * scale).astype(w.dtype)


def _kernels(model) -> list[tuple[object, str]]:
    return [(layer.kernel, type(layer).__name__) for layer in walk_layers(model)
            if type(layer).__name__ in QUANT_LAYERS and getattr(layer, "kernel", None) is not None]


def finetune(model, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
             epochs: int = 3, lr: float = 1e-4, batch: int = 32, seed: int = 0,
             echo: Callable[[str], None] = print) -> tuple[object, dict]:
    """A fine-tuned copy of `model` (the original is untouched) and a description of the run."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tuned = keras.models.clone_model(model)
    tuned.set_weights(model.get_weights())
    for layer in walk_layers(tuned):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    kernels = _kernels(tuned)
    opt = keras.optimizers.Adam(lr)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    rng = np.random.default_rng(seed)

    def quantized_accuracy() -> float:
        saved = [k.numpy() for k, _ in kernels]
        for (k, kind), w in zip(kernels, saved):
            k.assign(fake_quant_per_channel(w, kind))
        probs = np.concatenate([np.asarray(tuned(x_val[i:i + 64], training=False)) for i in range(0, len(x_val), 64)])
        for (k, _), w in zip(kernels, saved):
            k.assign(w)
        return float(np.mean(probs.argmax(1) == y_val))

    best_acc, best_weights, history = quantized_accuracy(), tuned.get_weights(), []
    for epoch in range(epochs):
        order = rng.permutation(len(x_train))
        losses = []
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            xb = augment_batch(x_train[idx], rng)
            saved = [k.numpy() for k, _ in kernels]
            for (k, kind), w in zip(kernels, saved):
                k.assign(fake_quant_per_channel(w, kind))
            with tf.GradientTape() as tape:
                loss = loss_fn(y_train[idx], tuned(xb, training=True))
            grads = tape.gradient(loss, tuned.trainable_variables)
            for (k, _), w in zip(kernels, saved):
                k.assign(w)  # straight-through: the gradient at the quantized point updates the float weights
            opt.apply_gradients([(g, v) for g, v in zip(grads, tuned.trainable_variables) if g is not None])
            losses.append(float(loss))
        acc = quantized_accuracy()
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_acc_int8_weights": acc})
        echo(f"  qat epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.4f}, val accuracy (int8 weights) {100 * acc:.2f} %")
        if acc >= best_acc:
            best_acc, best_weights = acc, tuned.get_weights()
    tuned.set_weights(best_weights)
    info = {"method": "weight fake-quant fine-tuning (int8 per-channel, straight-through), activations PTQ",
            "epochs": epochs, "lr": lr, "batch": batch, "history": history, "best_val_acc_int8_weights": best_acc,
            "batchnorm": "frozen"}
    return tuned, info
