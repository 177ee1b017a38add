#!/usr/bin/env bash
# Install the leukedge agent on Raspberry Pi OS Bookworm (64-bit) with a Pi camera and,
# optionally, a Coral USB Edge TPU. Run from a checkout of the repository, as root.
#
# pycoral is NOT installed: it has no wheels for Python 3.11 (Bookworm's Python) and is not
# needed, because LiteRT loads the Edge TPU delegate itself (load_delegate("libedgetpu.so.1")).
# Only the Edge TPU runtime library, libedgetpu1-std, comes from Coral's apt repository.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=deploy/lib.sh
source "$HERE/../lib.sh"
# shellcheck source=deploy/agent-lib.sh
source "$HERE/../agent-lib.sh"

BUNDLE_HELP="a converted bundle (manifest.json + model files) to install"
SOURCE_HELP="default picam: - the Pi camera via picamera2"
MQTT_HELP="default mqtt://127.0.0.1:1883, the local broker"
FORCE_HELP="this is not Raspberry Pi OS Bookworm"

usage() {
    agent_usage "[--with-broker] [--no-coral]" \
"  --with-broker       also set up the clinic broker on this box (deploy/mosquitto/install-broker.sh)
                      with a user for this device; its password is used for the agent
  --no-coral          skip the Coral Edge TPU runtime"
}

own_option() {
    SHIFT_BY=1
    case $1 in
    --with-broker) BROKER=1 ;;
    --no-coral) CORAL=0 ;;
    *) SHIFT_BY=0 ;;
    esac
}

SOURCE_URI=picam:
BROKER=0
CORAL=1
parse_args "$@"
need_root "$@"

codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-unknown}")
if [[ $codename != bookworm ]]; then
    [[ $FORCE == 1 || $DRY_RUN == 1 ]] || die "this is '$codename', not Raspberry Pi OS Bookworm (--force to go on)"
    warn "this is '$codename', not Bookworm; going on"
fi

say "system packages: Python venv, picamera2 (libcamera) from Raspberry Pi OS"
packages=(python3-venv python3-pip python3-picamera2)
[[ $BROKER == 0 ]] || packages+=(mosquitto mosquitto-clients)
run apt-get update
# --no-install-recommends keeps picamera2's desktop preview (Qt, OpenGL) off a headless box.
run apt-get install -y --no-install-recommends "${packages[@]}"

if [[ $CORAL == 1 ]]; then
    say "Coral Edge TPU runtime (libedgetpu1-std) from Coral's apt repository"
    keyring=/usr/share/keyrings/coral-edgetpu.gpg
    run curl -fsSL -o /tmp/coral-apt-key.gpg https://packages.cloud.google.com/apt/doc/apt-key.gpg
    run gpg --dearmor --yes -o "$keyring" /tmp/coral-apt-key.gpg
    run rm -f /tmp/coral-apt-key.gpg
    echo "deb [signed-by=$keyring] https://packages.cloud.google.com/apt coral-edgetpu-stable main" \
        | write_file /etc/apt/sources.list.d/coral-edgetpu.list 644
    run apt-get update
    run apt-get install -y libedgetpu1-std
    # The package ships a udev rule giving group plugdev the USB accelerator; write the same
    # rule if it is missing (both USB ids: before and after the firmware is loaded).
    if [[ $DRY_RUN == 1 ]] || ! compgen -G "/lib/udev/rules.d/*edgetpu*.rules" >/dev/null; then
        printf '%s\n' "# Coral USB Accelerator: usable by group plugdev (leukedge-agent is a member)" \
            'SUBSYSTEM=="usb", ATTRS{idVendor}=="1a6e", ATTRS{idProduct}=="089a", GROUP="plugdev", MODE="0660"' \
            'SUBSYSTEM=="usb", ATTRS{idVendor}=="18d1", ATTRS{idProduct}=="9302", GROUP="plugdev", MODE="0660"' \
            | write_file /etc/udev/rules.d/71-leukedge-edgetpu.rules 644
    fi
    run udevadm control --reload-rules
    run udevadm trigger --subsystem-match=usb
    say "pycoral is not installed: no Python 3.11 wheels, and LiteRT loads the Edge TPU delegate itself"
fi

create_user video plugdev

constraints=()
if system_numpy_pin "$PREFIX/constraints.txt"; then constraints=(-c "$PREFIX/constraints.txt"); fi
make_venv "${constraints[@]}"

if [[ $BROKER == 1 ]]; then
    dry=()
    [[ $DRY_RUN == 1 ]] && dry=(--dry-run)
    "$SRC/deploy/mosquitto/install-broker.sh" "${dry[@]}" --device "$DEVICE_ID" --restart
    MQTT_PASSWORD_FILE=/etc/mosquitto/leukedge/secrets/$DEVICE_ID.password
fi

install_bundle
install_config
install_unit ""
if [[ $START == 1 ]]; then start_agent; else say "start it with: systemctl start leukedge-agent"; fi
