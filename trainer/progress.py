"""Progress you can see while a model trains: one plain line per epoch, and a live bar in a terminal.

Used by `leukedge train` and `leukedge pretrain`; `frames` gives convert and bench a bar over
images. Why not Keras' own bar: it redraws with carriage returns, which floods a log file,
and it runs after every other callback, so a line printed at the end of an epoch would land
inside it. Here the bar (tqdm) is drawn only when the stream is a terminal and is cleared
when the epoch ends; the epoch line is plain text that reads the same in a terminal, a log
file or the journal:

    epoch 3/14: loss 0.8123, accuracy 71.2 %, val loss 0.9120, val accuracy 66.0 %, 93.2 s, ETA 17 min 05 s

The ETA is the epochs left times a typical epoch of the current phase (its first epoch, which
compiles the training step, left out when there are others); early stopping may end sooner.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

# (key in Keras' logs, label in the line, as a percentage?) in the order they are printed
FIELDS = (("loss", "loss", False), ("accuracy", "accuracy", True),
          ("val_loss", "val loss", False), ("val_accuracy", "val accuracy", True))


def format_duration(seconds: float) -> str:
    """42 s, 3 min 05 s, 2 h 07 min: short enough for every epoch line."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def typical_epoch(seconds: list[float]) -> float:
    """Seconds of a typical epoch of one phase: the mean without its first (compiling) epoch when there are others."""
    steady = seconds[1:] or seconds
    return sum(steady) / len(steady) if steady else 0.0


def epoch_line(epoch: int, total: int, logs: dict, seconds: float, eta: float, loss_label: str = "loss") -> str:
    """The line printed after epoch `epoch` (1-based) of `total`."""
    parts = []
    for key, label, percent in FIELDS:
        value = logs.get(key)
        if value is None:
            continue
        label = loss_label if key == "loss" else label
        parts.append(f"{label} {100 * float(value):.1f} %" if percent else f"{label} {float(value):.4f}")
    parts += [f"{seconds:.1f} s", f"ETA {format_duration(eta)}"]
    return f"epoch {epoch}/{total}: " + ", ".join(parts)


def make_progress_callback(total_epochs: int, stream: TextIO | None = None, live: bool | None = None,
                           loss_label: str = "loss", show: bool = True):
    """Keras callback: a bar over the batches of each epoch (`live`; default: when `stream` is a terminal)
    and `epoch_line` after each epoch. Put it after callbacks that add to the logs (validation),
    so its line sees them and its seconds include them. `seconds` keeps every epoch's wall time
    (also with `show` off: then nothing is printed or drawn).

    One instance may serve several `fit` calls (train's head and fine-tune phases): epochs are
    numbered by Keras' own epoch index, which `initial_epoch` carries across the calls.
    """
    import keras
    from tqdm import tqdm

    out = stream if stream is not None else sys.stdout
    show_bar = show and (bool(live) if live is not None else bool(getattr(out, "isatty", lambda: False)()))

    class EpochProgress(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []
            self._phase: list[float] = []  # this fit call's epochs, for the ETA
            self._t0 = 0.0
            self._bar = None

        def on_train_begin(self, logs=None):
            self._phase = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()
            steps = (self.params or {}).get("steps")
            self._bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{total_epochs}", unit="batch", leave=False,
                             file=out, dynamic_ncols=True, disable=not show_bar)

        def on_train_batch_end(self, batch, logs=None):
            if self._bar is not None:
                self._bar.update(1)
                if logs and "loss" in logs:
                    self._bar.set_postfix_str(f"{loss_label} {float(logs['loss']):.4f}", refresh=False)

        def on_epoch_end(self, epoch, logs=None):
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            took = time.perf_counter() - self._t0
            self.seconds.append(took)
            self._phase.append(took)
            eta = typical_epoch(self._phase) * max(0, total_epochs - (epoch + 1))
            if show:
                print(epoch_line(epoch + 1, total_epochs, logs or {}, took, eta, loss_label), file=out, flush=True)

        def on_train_end(self, logs=None):
            if self._bar is not None:  # interrupted mid-epoch
                self._bar.close()
                self._bar = None

    return EpochProgress()


def frames(items, label: str, progress: bool = True):
    """`items` one at a time, with a live bar (on stderr) only when stderr is a terminal.

    For loops over images that run long with no line of their own: convert's calibration
    pass and its one-frame-at-a-time validation through LiteRT/onnxruntime (eight passes
    per field with TTA), and `leukedge bench`. The bar never reaches a log file.
    """
    from tqdm import tqdm

    return tqdm(items, desc=label, unit="img", leave=False, dynamic_ncols=True, disable=None if progress else True)
