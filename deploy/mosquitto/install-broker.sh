#!/usr/bin/env bash
# Set up the clinic's edge broker: TLS certificates, password file, ACL, optional bridge.
#
# Renders leukedge.conf (and bridge.conf) from this folder into the Mosquitto config tree,
# so the files in the repository are the ones that run; only paths, ports and the bridge's
# address and credentials are filled in.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=deploy/lib.sh
source "$HERE/../lib.sh"

usage() {
    cat <<EOF
Usage: $(basename "$0") [--dry-run] [--etc DIR] [--data DIR] [--tls-port N] [--local-port N]
                     [--no-local] [--host NAME]... [--ip ADDR]... [--device ID]...
                     [--lab-user NAME] [--central HOST:PORT --site NAME [--central-ca FILE]
                     [--bridge-password-file FILE]] [--restart]

  --etc DIR        Mosquitto config root (default /etc/mosquitto); writes DIR/conf.d/leukedge.conf,
                   DIR/leukedge/{passwd,acl,certs/,secrets/}, and DIR/mosquitto.conf if missing
  --data DIR       persistence directory for a newly written mosquitto.conf (default /var/lib/mosquitto)
  --tls-port N     TLS listener for the clinic network (default 8883)
  --local-port N   plain listener on 127.0.0.1 for an agent on this box (default 1883)
  --no-local       TLS only, no loopback listener
  --host/--ip      names and addresses in the broker certificate (default: this host, localhost, 127.0.0.1)
  --device ID      add a device user (see add-device.sh); repeat for several
  --lab-user NAME  add a lab integrator user that reads every device
  --central H:P    bridge to the lab's central broker over TLS; --site names this clinic
                   (bridge user bridge-SITE, password from --bridge-password-file)
  --central-ca F   CA of the central broker's certificate (default: the system CA store)
  --restart        restart mosquitto when done
  --dry-run        print the plan, change nothing
EOF
}

ETC=/etc/mosquitto
DATA=/var/lib/mosquitto
TLS_PORT=8883
LOCAL_PORT=1883
LOCAL=1
CERT_ARGS=()
DEVICES=()
LAB_USER=
CENTRAL=
SITE=
CENTRAL_CA=
BRIDGE_PW=
RESTART=0
while [[ $# -gt 0 ]]; do
    case $1 in
    --dry-run) DRY_RUN=1 ;;
    --etc) ETC=${2:?--etc needs a directory}; shift ;;
    --data) DATA=${2:?--data needs a directory}; shift ;;
    --tls-port) TLS_PORT=${2:?--tls-port needs a number}; shift ;;
    --local-port) LOCAL_PORT=${2:?--local-port needs a number}; shift ;;
    --no-local) LOCAL=0 ;;
    --host | --ip) CERT_ARGS+=("$1" "${2:?$1 needs a value}"); shift ;;
    --device) DEVICES+=("${2:?--device needs an id}"); shift ;;
    --lab-user) LAB_USER=${2:?--lab-user needs a name}; shift ;;
    --central) CENTRAL=${2:?--central needs HOST:PORT}; shift ;;
    --site) SITE=${2:?--site needs a name}; shift ;;
    --central-ca) CENTRAL_CA=${2:?--central-ca needs a file}; shift ;;
    --bridge-password-file) BRIDGE_PW=${2:?--bridge-password-file needs a file}; shift ;;
    --restart) RESTART=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
    esac
    shift
done
for port in "$TLS_PORT" "$LOCAL_PORT"; do
    [[ $port =~ ^[0-9]+$ && $port -ge 1 && $port -le 65535 ]] || die "port '$port' is not 1..65535"
done
[[ $ETC != *[#[:space:]]* && $DATA != *[#[:space:]]* ]] || die "--etc/--data: no spaces or '#' in paths"
if [[ -n $CENTRAL ]]; then
    [[ $CENTRAL =~ ^[A-Za-z0-9.-]+:[0-9]+$ ]] || die "--central '$CENTRAL': expected HOST:PORT"
    valid_name "$SITE" || die "--central needs --site NAME (letters, digits, '.', '_', '-')"
    [[ -z $CENTRAL_CA || -r $CENTRAL_CA ]] || die "--central-ca $CENTRAL_CA: cannot read it"
    [[ -n $BRIDGE_PW && -r $BRIDGE_PW ]] || die "--central needs --bridge-password-file (readable)"
fi
need_root "$@"
CONF=$ETC/leukedge
run mkdir -p "$ETC/conf.d" "$CONF/certs"

say "certificates in $CONF/certs"
dry=()
[[ $DRY_RUN == 1 ]] && dry=(--dry-run)
"$HERE/make-certs.sh" "${dry[@]}" --out "$CONF/certs" "${CERT_ARGS[@]}"

say "broker config: $ETC/conf.d/leukedge.conf"
render=(-e "s#/etc/mosquitto#$ETC#g" -e "s/^listener 8883\$/listener $TLS_PORT/"
    -e "s/^listener 1883 127.0.0.1\$/listener $LOCAL_PORT 127.0.0.1/")
[[ $LOCAL == 1 ]] || render+=(-e '/^listener 1883 127.0.0.1$/d')
sed "${render[@]}" "$HERE/leukedge.conf" | write_file "$ETC/conf.d/leukedge.conf" 644

if [[ ! -f $ETC/mosquitto.conf ]]; then
    say "no $ETC/mosquitto.conf: writing a minimal one"
    printf '%s\n' "# Main Mosquitto configuration; site settings live in conf.d/." \
        "persistence true" "persistence_location $DATA/" "include_dir $ETC/conf.d" \
        | write_file "$ETC/mosquitto.conf" 644
    run mkdir -p "$DATA"
fi
if [[ ! -f $CONF/acl ]]; then
    printf '%s\n' "# leukedge broker ACL: one block per user (add-device.sh); everything else is denied." \
        | write_file "$CONF/acl" 640
fi
[[ -f $CONF/passwd ]] || printf '' | write_file "$CONF/passwd" 640

for id in "${DEVICES[@]}"; do
    "$HERE/add-device.sh" "${dry[@]}" --etc "$CONF" --role device "$id"
done
[[ -z $LAB_USER ]] || "$HERE/add-device.sh" "${dry[@]}" --etc "$CONF" --role lab "$LAB_USER"

if [[ -n $CENTRAL ]]; then
    say "bridge to $CENTRAL as bridge-$SITE: $ETC/conf.d/leukedge-bridge.conf"
    bridge=(-e "s#/etc/mosquitto#$ETC#g" -e "s/^address .*/address $CENTRAL/"
        -e "s/leukedge-bridge-SITE/leukedge-bridge-$SITE/")
    if [[ -n $CENTRAL_CA ]]; then
        run cp "$CENTRAL_CA" "$CONF/certs/central-ca.crt"
    else
        bridge+=(-e "s#^bridge_cafile .*#bridge_capath /etc/ssl/certs#")
    fi
    # The bridge's password has to be in the config: the file is mode 640, group mosquitto.
    if [[ $DRY_RUN == 1 ]]; then
        sed "${bridge[@]}" "$HERE/bridge.conf" | write_file "$ETC/conf.d/leukedge-bridge.conf" 640
        printf '    | remote_username bridge-%s\n    | remote_password (from %s, not shown)\n' "$SITE" "$BRIDGE_PW"
    else
        {
            sed "${bridge[@]}" "$HERE/bridge.conf"
            printf 'remote_username bridge-%s\nremote_password %s\n' "$SITE" "$(head -n1 "$BRIDGE_PW")"
        } | write_secret "$ETC/conf.d/leukedge-bridge.conf" 640
    fi
fi

# Mosquitto 2 reads certificates and these files after dropping to its own user.
if [[ $(id -u) == 0 ]] && getent group mosquitto >/dev/null; then
    owned=("$CONF/certs/server.key" "$CONF/passwd" "$CONF/acl")
    [[ -z $CENTRAL ]] || owned+=("$ETC/conf.d/leukedge-bridge.conf")
    run chgrp mosquitto "${owned[@]}"
    run chmod 640 "$CONF/certs/server.key"
fi

if [[ $RESTART == 1 ]]; then
    run systemctl restart mosquitto
else
    say "start it with: systemctl restart mosquitto"
fi
