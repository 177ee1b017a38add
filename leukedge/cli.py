"""The `leukedge` command: one console script, subcommands imported lazily.

Only the chosen subcommand's module is imported, so `leukedge agent --help` never
loads TensorFlow. Each command module provides `add_arguments(parser)` (cheap imports
only) and `run(args) -> int`.

Exit codes (docs/contracts.md): 0 success, 2 bad input or usage (one line naming what is
wrong), 1 a failure the kit names (one `error:` line, such as a demo step) or an internal error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from edge.errors import LeukedgeError
from leukedge import __version__

COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("trainer.synth.cli", "write procedural Wright-Giemsa smear fields in the ALL layout (and a video)"),
    "pretrain": ("trainer.pretrain_cli", "self-supervised (VICReg) pretraining on the lab's own images"),
    "train": ("trainer.train_cli", "train MobileNetV2 or the custom CNN on an ALL-layout folder"),
    "evaluate": ("trainer.evaluate_cli", "score a trained RUN on any folder, same report format"),
    "robustness": ("trainer.robustness_cli", "score a RUN or BUNDLE under stain and acquisition shifts"),
    "convert": ("converter.cli", "quantize RUN/model.keras into a validated bundle (TFLite int8, ONNX)"),
    "bench": ("converter.bench_cli", "reprint a bundle's validation table on any folder"),
    "agent": ("edge.agent_cli", "run the edge agent: camera -> classify -> MQTT, offline-first"),
    "demo": ("leukedge.demo", "synthetic data -> train -> convert -> agent -> MQTT, end to end"),
    "keys": ("leukedge.keys_cli", "make an Ed25519 signing key pair for a lab"),
    "sign": ("leukedge.sign_cli", "sign a bundle (release number, manifest.sig)"),
    "verify": ("leukedge.verify_cli", "check a bundle's or pack's signature and every sha256"),
    "pack": ("leukedge.pack_cli", "write a bundle as one deterministic .leukedge archive"),
    "install": ("leukedge.install_cli", "on the box: install a pack, or roll back, through the running agent"),
    "push": ("leukedge.push_cli", "send a pack to devices over MQTT (resumable) and wait for their events"),
    "fleet": ("leukedge.fleet_cli", "list every device seen on the broker: online, bundle, release"),
}


# Third-party modules that belong to an extra, for a clear hint when one is missing.
_EXTRAS = {
    "tensorflow": "train", "keras": "train", "imblearn": "train", "sklearn": "train",
    "matplotlib": "train", "tf2onnx": "train", "onnx": "train",
    "ai_edge_litert": "edge", "cv2": "edge", "paho": "edge", "prometheus_client": "edge", "picamera2": "pi",
    "cryptography": "edge",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's usage errors: one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = _Parser(prog="leukedge", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"leukedge {__version__}")
    # default None, not False: the namespace then tells a given -v from an absent one, and a subcommand
    # whose own options share the name `verbose` (trainer.train_cli) is not overridden by its absence
    parser.add_argument("-v", "--verbose", action="store_true", default=None, help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors: return the code, don't raise
        return int(exc.code or 0)
    if not args.command:
        parser.print_help()
        return 2
    _setup_logging(bool(args.verbose))
    try:
        return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)
    except LeukedgeError as exc:  # bad input (2) or a failure the kit names, such as a demo step (1)
        print(f"leukedge {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        extra = _EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"leukedge {args.command}: error: needs {exc.name}: pip install 'leukedge[{extra}]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"leukedge {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - last resort: one line, exit 1, traceback with -v
        if args.verbose:
            raise
        print(f"leukedge {args.command}: internal error: {type(exc).__name__}: {exc} (rerun with -v)", file=sys.stderr)
        return 1


def _setup_logging(verbose: bool) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


if __name__ == "__main__":
    sys.exit(main())
