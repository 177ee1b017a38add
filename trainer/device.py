"""Where the training step runs, asked of the Keras backend: XLA or not, a GPU or not, several GPUs.

TensorFlow and JAX are imported inside the functions: the backend decides which one exists.
"""

from __future__ import annotations


def jit_compile():
    """XLA everywhere except TensorFlow on CPU, where it compiles slowly and runs slower."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return "auto" if tf.config.list_physical_devices("GPU") else False
    return "auto"


def accelerated() -> bool:
    """Whether the training step runs on a GPU/TPU (then the host cores are free for augmentation)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if keras.backend.backend() == "jax":
        import jax

        return jax.default_backend() != "cpu"
    return False


def distribution_strategy():
    """MirroredStrategy when TensorFlow sees several GPUs; otherwise no strategy."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if len(tf.config.list_physical_devices("GPU")) > 1:
            return tf.distribute.MirroredStrategy()
    return None
