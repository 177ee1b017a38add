#!/usr/bin/env bash
# Build a TensorRT engine on the Jetson from a bundle's int8 Q/DQ ONNX (explicit quantization).
#
#   deploy/jetson/build_engine.sh [--dry-run] [--out ENGINE] [--workspace MiB] BUNDLE
#
# The Q/DQ file carries its own int8 scales, so no TensorRT calibration cache is needed:
# --int8 lets TensorRT use them, --fp16 lets layers without Q/DQ run in half precision.
# The ONNX input is uint8 NHWC with a dynamic batch; the engine is built for batch 1
# (what the agent feeds). --dry-run prints the trtexec command and checks the bundle only.
set -euo pipefail

usage() { echo "usage: $0 BUNDLE [--out ENGINE] [--workspace MiB] [--dry-run]" >&2; exit 2; }

bundle=""
out=""
workspace=1024
dry_run=0
while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || usage; out=$2; shift 2 ;;
        --workspace) [ $# -ge 2 ] || usage; workspace=$2; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) usage ;;
        -*) echo "$0: unknown option $1" >&2; exit 2 ;;
        *) [ -z "$bundle" ] || usage; bundle=$1; shift ;;
    esac
done
[ -n "$bundle" ] || usage

manifest="$bundle/manifest.json"
[ -f "$manifest" ] || { echo "$0: $manifest: missing (is $bundle a leukedge bundle?)" >&2; exit 2; }

# File name, sha256, input size and the ONNX input name, from the manifest and the model itself.
read -r onnx sha height width < <(python3 - "$manifest" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
e = next((f for f in m["files"] if f["format"] == "onnx-qdq"), None)
if e is None:
    sys.exit(f"{sys.argv[1]}: bundle has no onnx-qdq file (convert with --formats ...,onnx-qdq)")
print(e["path"], e["sha256"], m["input"]["height"], m["input"]["width"])
PY
)
model="$bundle/$onnx"
[ -f "$model" ] || { echo "$0: $model: missing" >&2; exit 2; }
have=$(sha256sum "$model" | cut -d' ' -f1)
[ "$have" = "$sha" ] || { echo "$0: $model: sha256 mismatch with the manifest" >&2; exit 2; }
input=$(python3 -c 'import onnx,sys; print(onnx.load(sys.argv[1]).graph.input[0].name)' "$model" 2>/dev/null \
        || echo "input_layer")
out=${out:-"$bundle/model_qdq.engine"}

trtexec=$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)
cmd=("$trtexec" "--onnx=$model" "--saveEngine=$out" --int8 --fp16
     "--shapes=${input}:1x${height}x${width}x3" "--memPoolSize=workspace:${workspace}M")

if [ "$dry_run" = 1 ]; then
    printf '%q ' "${cmd[@]}"; echo
    exit 0
fi
[ -x "$trtexec" ] || { echo "$0: trtexec not found (JetPack installs it at /usr/src/tensorrt/bin/trtexec)" >&2; exit 2; }
"${cmd[@]}"
echo "engine written: $out (build it on the Jetson that runs it: engines are tied to the GPU and TensorRT version)"
