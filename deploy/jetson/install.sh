#!/usr/bin/env bash
# Install the leukedge agent on an NVIDIA Jetson (JetPack 5 or 6). Run from a checkout, as root.
#
# The agent runs the bundle's Q/DQ ONNX file with ONNX Runtime on TensorRT (or CUDA). PyPI's
# onnxruntime-gpu is not built for Jetson: give the wheel that matches your JetPack with
# --ort-wheel (a file or URL, e.g. from NVIDIA's Jetson AI Lab package index) or --ort-index.
# Without one, the CPU build from PyPI is installed and the agent says so in `info`.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=deploy/lib.sh
source "$HERE/../lib.sh"
# shellcheck source=deploy/agent-lib.sh
source "$HERE/../agent-lib.sh"

BUNDLE_HELP="a converted bundle with an onnx-qdq (or onnx-fp32) file"
SOURCE_HELP="default cv:0; also /dev/videoN, rtsp://..., a file"
MQTT_HELP="default mqtt://127.0.0.1:1883"
FORCE_HELP="this does not look like a Jetson"

usage() {
    agent_usage "[--ort-wheel FILE|URL | --ort-index URL] [--build-engine]" \
"  --ort-wheel W       onnxruntime-gpu wheel built for this JetPack (file or URL)
  --ort-index URL     a pip index with Jetson onnxruntime-gpu wheels
  --build-engine      also build and time a TensorRT engine from the bundle's Q/DQ ONNX on
                      this device (deploy/jetson/build_engine.sh)"
}

own_option() {
    SHIFT_BY=1
    case $1 in
    --ort-wheel) ORT_WHEEL=${2:?--ort-wheel needs a file or URL}; SHIFT_BY=2 ;;
    --ort-index) ORT_INDEX=${2:?--ort-index needs a URL}; SHIFT_BY=2 ;;
    --build-engine) ENGINE=1 ;;
    *) SHIFT_BY=0 ;;
    esac
}

SOURCE_URI=cv:0
ORT_WHEEL=
ORT_INDEX=
ENGINE=0
parse_args "$@"
[[ -z $ORT_WHEEL || -z $ORT_INDEX ]] || die "give --ort-wheel or --ort-index, not both"
[[ $ENGINE == 0 || -n $BUNDLE ]] || die "--build-engine needs --bundle"
need_root "$@"

if [[ ! -f /etc/nv_tegra_release ]]; then
    [[ $FORCE == 1 || $DRY_RUN == 1 ]] || die "no /etc/nv_tegra_release: this is not a Jetson (--force to go on)"
    warn "no /etc/nv_tegra_release: this does not look like a Jetson; going on"
fi

say "system packages: Python venv (TensorRT's Python bindings come with JetPack)"
run apt-get update
run apt-get install -y --no-install-recommends python3-venv python3-pip

create_user video render

constraints=()
if system_numpy_pin "$PREFIX/constraints.txt"; then constraints=(-c "$PREFIX/constraints.txt"); fi
make_venv "${constraints[@]}"

say "ONNX Runtime"
pip=("$PREFIX/venv/bin/pip" install --quiet "${constraints[@]}")
if [[ -n $ORT_WHEEL ]]; then
    run "${pip[@]}" "$ORT_WHEEL"
elif [[ -n $ORT_INDEX ]]; then
    run "${pip[@]}" --extra-index-url "$ORT_INDEX" onnxruntime-gpu
else
    warn "no --ort-wheel/--ort-index: installing the CPU onnxruntime; TensorRT and CUDA stay unused"
    run "${pip[@]}" onnxruntime
fi

install_bundle
if [[ $ENGINE == 1 ]]; then
    say "TensorRT engine from the bundle's Q/DQ ONNX: $PREFIX/bundle/model_qdq.engine"
    if [[ $DRY_RUN == 1 ]]; then  # the installed copy does not exist yet: plan from the source bundle
        "$HERE/build_engine.sh" --dry-run --out "$PREFIX/bundle/model_qdq.engine" "$BUNDLE"
    else
        "$HERE/build_engine.sh" --out "$PREFIX/bundle/model_qdq.engine" "$PREFIX/bundle"
    fi
fi
install_config
install_unit "$SRC/deploy/systemd/jetson.conf"
if [[ $START == 1 ]]; then start_agent; else say "start it with: systemctl start leukedge-agent"; fi
