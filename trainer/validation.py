"""Validation that sees the model as trained: batch-norm statistics recomputed, then scored, best kept.

The batch-norm trap and its cure are told in trainer/train.py; this is the cure's third
part, shared with pretraining (trainer/pretrain.py recalibrates its encoder the same way).
"""

from __future__ import annotations

import math
import time

import numpy as np

from trainer.models import bn_layers

BN_RECAL_IMAGES = 512  # training images whose average statistics the BN layers get before each validation


def recalibrate_bn(model, x: np.ndarray, batch_size: int) -> int:
    """Set the trainable BN layers' moving statistics to the average over `x` (no weight update).

    Works the same under TensorFlow and JAX: an eager forward pass in training mode
    makes each BN layer assign moving = momentum * moving + (1 - momentum) * batch; with
    momentum k/(k+1) for batch k the result is the plain mean over all batches.
    Returns the number of batches used.
    """
    layers = [layer for layer in bn_layers(model) if layer.trainable]
    if not layers or len(x) == 0:
        return 0
    batch_size = min(batch_size, len(x))
    n_batches = len(x) // batch_size  # equal-size batches, so each weighs the same
    saved = [layer.momentum for layer in layers]
    try:
        for k in range(n_batches):
            for layer in layers:
                layer.momentum = k / (k + 1)
            model(x[k * batch_size:(k + 1) * batch_size], training=True)
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum
    return n_batches


def make_validation_callback(**kwargs):
    import keras

    class EpochValidation(keras.callbacks.Callback):
        """Recalibrate BN, validate, keep the best weights, stop after `patience` idle epochs.

        Best = highest validation accuracy, ties broken by lower validation loss (on a
        few hundred images accuracy ties are common). Runs first among the callbacks,
        so the progress bar and History see val_loss / val_accuracy.
        """

        def __init__(self, x_recal, x_val, y_val, batch, patience, checkpoint):
            super().__init__()
            self.x_recal, self.x_val, self.y_val = x_recal, x_val, y_val
            self.batch, self.patience, self.checkpoint = batch, patience, checkpoint
            self.best, self.best_weights, self.best_epoch = (-1.0, -math.inf), None, -1
            self.train_seconds: list[float] = []
            self.wait, self._t0 = 0, 0.0

        def on_train_begin(self, logs=None):
            self.wait = 0  # patience restarts with each phase

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.train_seconds.append(time.perf_counter() - self._t0)
            model = self.model
            recalibrate_bn(model, self.x_recal, self.batch)
            probs = np.asarray(model.predict(self.x_val, batch_size=self.batch, verbose=0), np.float64)
            loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(self.y_val)), self.y_val], 1e-7, 1.0))))
            acc = float(np.mean(probs.argmax(1) == self.y_val))
            logs = logs if logs is not None else {}
            logs.update(val_loss=loss, val_accuracy=acc,
                        lr=float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))
            if (acc, -loss) > self.best:
                self.best, self.best_epoch, self.wait = (acc, -loss), epoch, 0
                self.best_weights = model.get_weights()
                model.save_weights(self.checkpoint)
            else:
                self.wait += 1
                if self.wait >= self.patience:
                    model.stop_training = True

    return EpochValidation(**kwargs)
