"""`train --label-smoothing`: cross-entropy on integer labels with smoothed targets.

Keras' sparse cross-entropy has no `label_smoothing`, and the training batches carry integer
labels (the validation callback and SMOTE use them too), so the one-hot step lives here.
Registered, so a saved model.keras that was compiled with it loads with its compile state.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="leukedge")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy against (1 - s) * one_hot(y) + s / n_classes."""

    def __init__(self, smoothing: float = 0.0, n_classes: int = 4, name: str = "smoothed_sparse_crossentropy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.smoothing, self.n_classes = float(smoothing), int(n_classes)

    def call(self, y_true, y_pred):
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        target = keras.ops.one_hot(labels, self.n_classes)
        return keras.losses.categorical_crossentropy(target, y_pred, label_smoothing=self.smoothing)

    def get_config(self) -> dict:
        return super().get_config() | {"smoothing": self.smoothing, "n_classes": self.n_classes}
