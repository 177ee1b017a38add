"""`leukedge demo`: the whole kit end to end on synthetic data, in a few minutes on 2 cores.

synthetic smears + a microscope video of four slides (one patient each) -> train the custom CNN
and a small MobileNetV2 -> convert both to validated int8 bundles -> a local Mosquitto (when
installed) -> the edge agent on the video, while a lab system opens and closes one sample per
slide over MQTT and prints each result and sample decision -> a summary. Without a broker binary
the agent runs offline, pools a slide's worth of fields per sample, and the demo shows the outbox
holding every result. The agent's station page is up on a free local port while it runs and
after the summary until Enter in a terminal, 30 s otherwise (`--serve`: until Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from edge.errors import BadInput, LeukedgeError
from leukedge import demoreport
from leukedge.cli import main as cli_main
from leukedge.demoagent import PAGE_LINGER_S, DemoAgent, page_hold
from leukedge.quiet import chatter_to
# Each model's demo recipe (input size, epochs, extra `leukedge train` flags); one place to tune
# them. The custom CNN at half width trains about twice as fast as at full width on 2 cores; on the
# demo's fields it is still learning after 20 epochs (70 % test accuracy, two of four slides referred)
# and settles by about 50 (96.7 %, early stopping ends it), at about 1.3 s an epoch. MobileNetV2
# from random weights does not learn these fields within
# any CPU budget tried (chance to 52 % after 12-30 epochs at 64-128 px, see README), so it gets a
# short run that shows the path and the gate keeping it off the box. The order is the order of
# preference for the agent (choose_deployed): MobileNetV2, the paper's model, first.
RECIPES = {
    "mobilenetv2": {"size": 64, "epochs": 4, "args": ["--alpha", "0.35", "--weights", "none"]},
    "custom_cnn": {"size": 64, "epochs": 60, "args": ["--width", "0.5"]},
}
# The int8 gate's allowance here: the demo's test split has 60 images, so one image is 1.67
# points; the default 0.5 would refuse a model for one image flipping. Real splits of hundreds
# of images keep the default.
DEMO_MAX_DROP = "2.0"
# Why a model is expected to stay off the box in the demo, said before its step and in the summary
# so the gate's refusal reads as the rule working, not as the demo failing.
EXPECTED_OFF = {"mobilenetv2": "it trains from random weights here, and no CPU budget tried lets it learn these "
                               "fields (with ImageNet weights or a GPU it does; see README)"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="work folder (default demo-out)")
    p.add_argument("--per-class", type=int, default=100, help="synthetic fields per class (default 100)")
    p.add_argument("--size", type=int, default=None,
                   help="model input size in px for both models (default: each model's recipe, 64)")
    p.add_argument("--epochs", type=int, default=None,
                   help="training epochs for both models (default: each model's recipe, 4 and 60)")
    p.add_argument("--seed", type=int, default=0, help="seed for data, split and training")
    p.add_argument("--offline", action="store_true", help="skip the broker even when mosquitto is installed")
    p.add_argument("--serve", action="store_true",
                   help="keep the agent and its station page up after the summary until Ctrl-C "
                        f"(default: until Enter in a terminal, {PAGE_LINGER_S} s when not)")


def run(args: argparse.Namespace) -> int:
    if args.per_class < 20 or (args.size or 32) < 32 or (args.epochs or 1) < 1:
        raise BadInput("--per-class must be >= 20, --size >= 32 and --epochs >= 1")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    chatter = out / "third-party.log"
    chatter.unlink(missing_ok=True)
    with chatter_to(chatter):  # TensorFlow's and TFLite's own lines and warnings: kept there, not shown
        rc = _run(args, out)
    print(f"  messages of the libraries underneath (TensorFlow, TFLite, ONNX): {chatter}")
    return rc


def _run(args: argparse.Namespace, out: Path) -> int:
    t0 = time.monotonic()
    data, video = out / "data", out / "microscope.mp4"
    _step("1/5 synthetic smears and a microscope video")
    _cli(["synth", "--out", str(data), "--per-class", str(args.per_class), "--size", "224",
          "--seed", str(args.seed), "--video", str(video), "--video-fields", "24", "--video-per-slide", "6"])

    bundles = {}
    for i, (arch, recipe) in enumerate(RECIPES.items()):
        run_dir, bundle = out / "runs" / arch, out / "bundles" / arch
        size, epochs = args.size or recipe["size"], args.epochs or recipe["epochs"]
        _step(f"{2 + i}/5 train {arch} ({epochs} epochs at {size} px) and convert it")
        if arch in EXPECTED_OFF:
            print(f"  expected on a CPU: {arch} stays below the colour baseline and off the box; "
                  f"{EXPECTED_OFF[arch]}. An int8 gate error below is the deploy rule at work, "
                  "not the demo failing", flush=True)
        _cli(["train", "--data", str(data), "--arch", arch, "--out", str(run_dir), "--img-size", str(size),
              "--epochs", str(epochs), "--seed", str(args.seed), *recipe["args"]])
        rc = _cli(["convert", str(run_dir), "--out", str(bundle), "--calib", "200", "--max-drop", DEMO_MAX_DROP],
                  allow=(2,))
        if rc == 0:
            bundles[arch] = bundle
        else:
            print(f"  the int8 gate refused {arch}{' (as expected here)' if arch in EXPECTED_OFF else ''}: "
                  f"it is not deployed (see {bundle}.rejected/)")

    reports = {a: _report(out, a) for a in RECIPES}
    deployed = choose_deployed(bundles, reports)
    _step(f"4/5 edge agent ({deployed} bundle) on the microscope video")
    with DemoAgent(bundles[deployed], video, out / "agent", offline=args.offline) as agent:
        run_ = agent.wait_video()
        _summary(out, deployed, reports, bundles, run_, t0)
        agent.hold_page(page_hold(args.serve))
    return 0


def _summary(out: Path, deployed: str, reports: dict, bundles: dict, run_: dict, t0: float) -> None:
    """Step 5: each model's figures and why it is or is not on the box, the per-slide table, summary.json."""
    _step("5/5 summary")
    models = demoreport.model_facts(reports, bundles, deployed, EXPECTED_OFF)
    for arch, facts in models.items():
        box = facts["accuracy_box"]
        print(f"  {arch:12s} test accuracy {facts['test_accuracy']:.3f}"
              + (f" (as the box decides, TTA and calibration applied: {box:.3f})" if box is not None else "")
              + f"  colour baseline {facts['colour_baseline']:.3f}  (split: {reports[arch]['split']['protocol']})")
        print(f"  {'':12s} {facts['status']}: {facts['why']}")
    for line in run_["lines"]:
        print(f"  {line}")
    rows = demoreport.slide_rows(run_["samples"], run_["results"], run_["slides"])
    print()
    for line in demoreport.table(rows):
        print(f"  {line}")
    seconds = {"total": time.monotonic() - t0, "agent": run_["seconds"]}
    path = demoreport.write_summary(out / "summary.json",
                                    demoreport.summary(deployed, models, rows, run_["mode"], seconds))
    print(f"\n  {deployed} ran on the box because {models[deployed]['why']}.")
    print(f"  plots: {out / 'runs' / 'custom_cnn'}/*.png   summary for scripts: {path}   "
          f"total {seconds['total']:.0f} s")


def choose_deployed(bundles: dict[str, Path], reports: dict[str, dict]) -> str:
    """The model the agent runs: the first in RECIPES (MobileNetV2, the paper's model, first)
    that passed the int8 gate and beats the colour baseline on the test split. A model that a
    colour-statistics classifier outdoes has learnt nothing a clinic could use, however small its
    int8 drop; if none qualifies the demo stops rather than show such a model's answers."""
    for arch in RECIPES:
        if arch in bundles and (reports[arch].get("beats_baseline") or 0) > 0:
            return arch
    said = ", ".join(f"{a} {reports[a]['accuracy']:.3f} vs baseline {reports[a]['baseline_accuracy']:.3f}"
                     + ("" if a in bundles else " (refused by the int8 gate)") for a in reports)
    raise LeukedgeError(f"no model both passed the int8 gate and beat the colour baseline ({said}); nothing to deploy")


def _report(out: Path, arch: str) -> dict:
    return json.loads((out / "runs" / arch / "report.json").read_text())


def _cli(argv: list[str], allow: tuple[int, ...] = ()) -> int:
    """Run one `leukedge` step in this process; a non-zero exit not in `allow` stops the demo."""
    rc = cli_main(argv)
    if rc != 0 and rc not in allow:
        raise LeukedgeError(f"step `leukedge {argv[0]}` failed with exit code {rc}")
    return rc


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)
