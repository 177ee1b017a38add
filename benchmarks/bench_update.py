"""Over-the-air bundle switch: time from `push` to the first result on the new model, and the
longest gap between results while the agent switches.

Builds (once, cached under --cache) two int8 MobileNetV2 bundles at 224 px (random weights,
different seeds: timing only) with the converter's TFLite export and a self-test, signs
them (release 1 and 2), packs the second; starts a real Mosquitto and the real agent
(`leukedge agent`, a process) on a looping folder paced like a camera (--fps), then
`leukedge push`es the pack. Prints: push -> first new result, push -> event, the longest
and median interval between consecutive results around the switch, and seq gaps
(target: no frame dropped, switch < 2 s).

    python benchmarks/bench_update.py [--fps 30] [--size 224] [--chunk-kb 256]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_agent import write_frames  # noqa: E402
from converter.signing import new_keys, sign  # noqa: E402
from converter.tflite_export import float_clone, io_quant, to_tflite  # noqa: E402
from converter.validate import run_format  # noqa: E402
from edge import selftest  # noqa: E402
from edge.pack import pack  # noqa: E402
from leukedge.agent_process import AgentProcess, agent_config, iso_ts, logged  # noqa: E402
from leukedge.cli import main as cli  # noqa: E402
from leukedge.localbroker import Broker, mosquitto_available  # noqa: E402
from trainer.models import build_model  # noqa: E402
from trainer.synth.fields import render_field  # noqa: E402


def build_bundle(out: Path, size: int, seed: int) -> Path:
    """An int8 MobileNetV2 bundle with a self-test (the agent runs it before switching)."""
    import keras  # start-up cost

    from edge.manifest import FileEntry, InputSpec, Manifest, sha256_file, write_manifest

    if (out / "manifest.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    calib = np.stack([render_field(rng, ("Benign", "Early", "Pre", "Pro")[i % 4], size) for i in range(32)])
    model = build_model("mobilenetv2", img_size=size, alpha=1.0, weights="none")
    path = out / "model_int8.tflite"
    data = to_tflite(float_clone(model), "int8", calib)
    path.write_bytes(data)
    qi, qo = io_quant(data)
    images = calib[: selftest.image_count(size, size)]
    st = selftest.write(out / selftest.FILE, images, {"tflite-int8": run_format(path, "tflite-int8", images, 0)[0]})
    files = [FileEntry(path=path.name, format="tflite-int8", sha256=sha256_file(path), size_bytes=path.stat().st_size,
                       input_quant=qi, output_quant=qo),
             FileEntry(path=st.name, format="selftest", sha256=sha256_file(st), size_bytes=st.stat().st_size)]
    write_manifest(out, Manifest(name=f"bench-mnv2-{seed}", arch="mobilenetv2", input=InputSpec(height=size, width=size),
                                 files=files))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--fps", type=float, default=30.0, help="source pacing, like a camera (default 30)")
    ap.add_argument("--chunk-kb", type=int, default=256)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "leukedge-bench-update")
    args = ap.parse_args()
    if not mosquitto_available():
        print("mosquitto binary not found: this benchmark needs a real broker")
        return 2
    from edge.manifest import load_manifest

    cache = args.cache
    a, b = build_bundle(cache / "a", args.size, 1), build_bundle(cache / "b", args.size, 2)
    work = Path(tempfile.mkdtemp(prefix="bench-update-"))
    try:
        new_keys(work / "keys")
        for bundle, release in ((a, 1), (b, 2)):
            sign(bundle, work / "keys" / "signing.key", release)
        b_pack = pack(b, work / "b.leukedge")
        new_model = load_manifest(b).file("tflite-int8").sha256
        frames = write_frames(cache / "frames", 60, 480)
        with Broker(work / "broker") as broker:
            url = f"mqtt://127.0.0.1:{broker.port}"
            cfg = agent_config(work, a, frames, url)
            cfg["source"]["fps"] = args.fps
            cfg["trust"] = {"keys": [str(work / "keys" / "signing.pub")]}
            cfg["update"] = {"store": str(work / "store")}
            agent = AgentProcess(work, cfg).start()
            try:
                deadline = time.monotonic() + 120
                while len(logged(work / "results.jsonl")) < 3 * args.fps and time.monotonic() < deadline:
                    time.sleep(0.2)
                t_push = time.time()
                rc = cli(["push", str(b_pack), "--mqtt", url, "--device-id", "devA", "--chunk-kb", str(args.chunk_kb)])
                t_event = time.time()
                time.sleep(3)
            finally:
                agent.terminate()
        res = logged(work / "results.jsonl")
        ts = [iso_ts(r["ts"]) for r in res]
        first_new = next((t for r, t in zip(res, ts) if r["model_sha256"] == new_model), None)
        seqs = [r["seq"] for r in res]
        gaps = [t2 - t1 for t1, t2 in zip(ts, ts[1:])]
        around = [g for g, t in zip(gaps, ts[1:]) if t_push - 1 <= t <= (first_new or t_event) + 1]
        print(f"pack {b_pack.stat().st_size / 1e6:.1f} MB, push exit {rc}, {len(res)} results at {args.fps:.0f} fps")
        if first_new is None:
            print("no result on the new model")
            return 1
        print(f"push -> first result on the new model: {first_new - t_push:.2f} s (target < 2 s)")
        print(f"push -> installed event at the sender: {t_event - t_push:.2f} s")
        print(f"longest interval between results around the switch: {max(around) * 1e3:.0f} ms "
              f"(median everywhere {sorted(gaps)[len(gaps) // 2] * 1e3:.0f} ms)")
        print(f"seq gaps: {sum(b - a - 1 for a, b in zip(seqs, seqs[1:]))} (0 = no frame lost)")
        pause = [ln.split("loop paused ")[1].split(" ms")[0] for ln in agent.log().splitlines() if "loop paused" in ln]
        print(f"agent loop paused for the switch itself: {pause[0] if pause else '?'} ms "
              "(the rest of the gap: loading and self-testing the new model on a shared CPU)")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
