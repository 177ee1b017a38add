# shellcheck shell=bash
# Install steps shared by deploy/pi/install.sh and deploy/jetson/install.sh (sourced).
#
# Expects lib.sh to be sourced first and HERE set to the installer's folder. Sets the defaults
# both installers share (the caller then sets SOURCE_URI and its own options):
#   SRC (repository root), PREFIX (/opt/leukedge), CONF_DIR (/etc/leukedge), AGENT_USER,
#   DEVICE_ID, BACKEND, MQTT_URL, MQTT_PASSWORD_FILE (may be empty), BUNDLE (may be empty)
# and parses the command line (parse_args) with the usage text both share (agent_usage).

# shellcheck disable=SC2034  # read by the installers that source this file
SRC=$(cd "$HERE/../.." && pwd)
PREFIX=/opt/leukedge
CONF_DIR=/etc/leukedge
AGENT_USER=leukedge
DEVICE_ID=$(hostname | sed 's/[^A-Za-z0-9._-]/-/g')
BACKEND=auto
MQTT_URL=mqtt://127.0.0.1:1883
MQTT_PASSWORD_FILE=
BUNDLE=
START=0
FORCE=0

# common_option "$@": parse one option both installers take; sets SHIFT_BY (0 = not ours).
# shellcheck disable=SC2034  # the variables are read by the installers that source this file
common_option() {
    SHIFT_BY=1
    case $1 in
    --dry-run) DRY_RUN=1 ;;
    --device-id) DEVICE_ID=${2:?--device-id needs an id}; SHIFT_BY=2 ;;
    --bundle) BUNDLE=${2:?--bundle needs a directory}; SHIFT_BY=2 ;;
    --source) SOURCE_URI=${2:?--source needs a URI}; SHIFT_BY=2 ;;
    --mqtt) MQTT_URL=${2:?--mqtt needs a URL}; SHIFT_BY=2 ;;
    --mqtt-password-file) MQTT_PASSWORD_FILE=${2:?--mqtt-password-file needs a file}; SHIFT_BY=2 ;;
    --prefix) PREFIX=${2:?--prefix needs a directory}; SHIFT_BY=2 ;;
    --start) START=1 ;;
    --force) FORCE=1 ;;
    *) SHIFT_BY=0 ;;
    esac
}

# parse_args "$@": every option; the installer's own ones through its own_option (which sets
# SHIFT_BY as common_option does, 0 = not its), then check_args. -h/--help prints usage.
parse_args() {
    while [[ $# -gt 0 ]]; do
        common_option "$@"
        [[ $SHIFT_BY -gt 0 ]] || own_option "$@"
        if [[ $SHIFT_BY -eq 0 ]]; then
            case $1 in
            -h | --help) usage; exit 0 ;;
            *) usage >&2; die "unknown argument: $1" ;;
            esac
        fi
        shift "$SHIFT_BY"
    done
    check_args
}

# agent_usage SYNOPSIS OPTIONS: the usage text, the common options' lines from here and the
# installer's own SYNOPSIS and OPTIONS lines, with its wording for --bundle, --source, --mqtt
# and --force in BUNDLE_HELP, SOURCE_HELP, MQTT_HELP and FORCE_HELP.
agent_usage() {
    cat <<USAGE
Usage: sudo $(basename "$0") [--dry-run] [--device-id ID] [--bundle DIR] [--source URI]
                          [--mqtt URL] [--mqtt-password-file FILE]
                          $1
                          [--prefix DIR] [--start] [--force]

  --device-id ID      this box's id on MQTT (default: the host name)
  --bundle DIR        $BUNDLE_HELP
  --source URI        frame source ($SOURCE_HELP)
  --mqtt URL          broker ($MQTT_HELP)
  --mqtt-password-file FILE   the device's broker password (see deploy/mosquitto/add-device.sh)
$2
  --prefix DIR        where the venv and bundle go (default /opt/leukedge)
  --start             check the config as the agent user, then start the service
  --force             install even if $FORCE_HELP
  --dry-run           print every step, change nothing
USAGE
}

STATE_DIR=/var/lib/leukedge
LOG_DIR=/var/log/leukedge
UNIT_DIR=/etc/systemd/system

# create_user GROUP...: a system user with no login and no home outside its state directory,
# added to each GROUP that exists on this system (device access without privileges).
create_user() {
    if getent passwd "$AGENT_USER" >/dev/null; then
        say "user $AGENT_USER exists"
    else
        say "creating the system user $AGENT_USER"
        run useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
            --shell /usr/sbin/nologin "$AGENT_USER"
    fi
    local g
    for g in "$@"; do
        if getent group "$g" >/dev/null; then
            run usermod -aG "$g" "$AGENT_USER"
        else
            warn "group $g does not exist here; $AGENT_USER is not added to it"
        fi
    done
}

# make_venv PIP_ARGS...: the agent's virtual environment. --system-site-packages lets it see
# Python packages that only the distribution ships (picamera2 on the Pi, TensorRT on Jetson).
make_venv() {
    say "virtual environment $PREFIX/venv (with the system site-packages)"
    run mkdir -p "$PREFIX"
    run python3 -m venv --system-site-packages "$PREFIX/venv"
    run "$PREFIX/venv/bin/pip" install --quiet --upgrade pip
    run "$PREFIX/venv/bin/pip" install --quiet "$@" "${SRC}[edge]"
}

# system_numpy_pin FILE: pin the venv's numpy to the system one. Packages from apt
# (picamera2's simplejpeg, TensorRT's bindings) are built against it; a newer numpy from
# pip would shadow it and break them at import time.
system_numpy_pin() {
    local ver
    ver=$(python3 -c 'import numpy; print(numpy.__version__)' 2>/dev/null || true)
    if [[ -z $ver ]]; then
        warn "no system numpy found; the venv gets numpy from pip"
        return 1
    fi
    say "pinning numpy==$ver (the system's, which apt packages were built against)"
    run mkdir -p "$PREFIX"
    printf 'numpy==%s\n' "$ver" | write_file "$1" 644
}

# check_args: refuse bad arguments before anything is changed.
check_args() {
    valid_name "$DEVICE_ID" || die "--device-id '$DEVICE_ID': use letters, digits, '.', '_' or '-'"
    [[ -z $BUNDLE || -f $BUNDLE/manifest.json ]] || die "--bundle $BUNDLE: no manifest.json (not a leukedge bundle)"
    [[ -z $MQTT_PASSWORD_FILE || -r $MQTT_PASSWORD_FILE ]] || die "--mqtt-password-file: cannot read $MQTT_PASSWORD_FILE"
    [[ $MQTT_URL =~ ^(mqtt|mqtts)://[^/]+$ ]] || die "--mqtt '$MQTT_URL': expected mqtt://HOST:PORT or mqtts://HOST:PORT"
}

install_bundle() {
    if [[ -z $BUNDLE ]]; then
        say "no --bundle given: copy one to $PREFIX/bundle before starting the agent"
        return 0
    fi
    say "bundle $BUNDLE -> $PREFIX/bundle"
    run rm -rf "$PREFIX/bundle"
    run cp -r "$BUNDLE" "$PREFIX/bundle"
    run chmod -R a+rX,go-w "$PREFIX/bundle"
}

# The config this installer writes: the few keys a site sets; every other key keeps its
# documented default (see agent.example.yaml, copied next to it).
agent_config() {
    cat <<EOF
# Written by the leukedge installer. Every key is documented in agent.example.yaml.
device_id: $DEVICE_ID
bundle: $PREFIX/bundle
backend:
  name: $BACKEND
source:
  uri: "$SOURCE_URI"
mqtt:
  url: $MQTT_URL
  # MQTT 5: a publish the broker's ACL refuses comes back as "not authorized" and is counted,
  # where MQTT 3.1.1 acknowledges it and drops it silently.
  protocol: "5"
  username: $DEVICE_ID
  password_file: $CONF_DIR/mqtt.password
outbox:
  path: $STATE_DIR/outbox.sqlite
result_log:
  path: $LOG_DIR/results.jsonl
update:
  # Bundles installed over MQTT, the drop folder or \`leukedge install\` (inside the unit's state directory).
  store: $STATE_DIR/bundles
trust:
  # The lab's signing.pub files: with none, this box runs only \`bundle:\` and takes no updates.
  keys: []
EOF
}

install_config() {
    run mkdir -p "$CONF_DIR"
    run chgrp "$AGENT_USER" "$CONF_DIR"
    run chmod 750 "$CONF_DIR"
    if [[ -f $SRC/deploy/agent.example.yaml ]]; then
        run install -m 644 "$SRC/deploy/agent.example.yaml" "$CONF_DIR/agent.example.yaml"
    fi
    if [[ -f $CONF_DIR/agent.yaml ]]; then
        say "keeping the existing $CONF_DIR/agent.yaml"
    else
        say "agent config $CONF_DIR/agent.yaml"
        agent_config | write_file "$CONF_DIR/agent.yaml" 640
        run chgrp "$AGENT_USER" "$CONF_DIR/agent.yaml"
    fi
    if [[ -n $MQTT_PASSWORD_FILE ]]; then
        say "broker password -> $CONF_DIR/mqtt.password (mode 640, group $AGENT_USER)"
        run install -m 640 -g "$AGENT_USER" "$MQTT_PASSWORD_FILE" "$CONF_DIR/mqtt.password"
    elif [[ ! -f $CONF_DIR/mqtt.password ]]; then
        say "no --mqtt-password-file: put the device's broker password in $CONF_DIR/mqtt.password"
    fi
}

# install_unit DROP_IN: the systemd unit, and a drop-in with platform differences ("" for none).
install_unit() {
    say "systemd unit $UNIT_DIR/leukedge-agent.service"
    run install -m 644 "$SRC/deploy/systemd/leukedge-agent.service" "$UNIT_DIR/leukedge-agent.service"
    if [[ -n $1 ]]; then
        run mkdir -p "$UNIT_DIR/leukedge-agent.service.d"
        run install -m 644 "$1" "$UNIT_DIR/leukedge-agent.service.d/$(basename "$1")"
    fi
    run systemctl daemon-reload
    run systemctl enable leukedge-agent.service
}

# start_agent: check config, bundle, backend and broker as the agent's user, then start.
start_agent() {
    run runuser -u "$AGENT_USER" -- "$PREFIX/venv/bin/leukedge" agent --check --config "$CONF_DIR/agent.yaml"
    run systemctl restart leukedge-agent.service
    say "running: journalctl -u leukedge-agent -f"
}
