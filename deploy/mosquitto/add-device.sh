#!/usr/bin/env bash
# Add a broker user (a device, a lab integrator or a clinic bridge): password + ACL entry.
#
# The ACL is the security boundary: a device may publish only under leukedge/<its id>/
# and read only its own leukedge/<id>/cmd/#, so a stolen device password cannot forge
# another microscope's results. The password goes to mosquitto_passwd on stdin (never on
# a command line, where `ps` would show it) and is kept in a mode-600 file for the device.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=deploy/lib.sh
source "$HERE/../lib.sh"

usage() {
    cat <<EOF
Usage: $(basename "$0") [--dry-run] [--etc DIR] [--role device|lab|bridge]
                     [--password-file FILE] [--reload] NAME

Adds NAME to DIR/passwd (default DIR: /etc/mosquitto/leukedge) and its rules to DIR/acl:
  device  publish leukedge/NAME/#, read leukedge/NAME/cmd/#   (NAME = the agent's device_id)
          and its Home Assistant discovery configs, homeassistant/+/NODE/# (NODE = NAME, '.' -> '_')
  lab     read leukedge/+/#, publish leukedge/+/cmd/#          (integrators, dashboards, push)
          and read homeassistant/# (a Home Assistant user)
  bridge  publish leukedge/+/{result,sample,status,info,stats,event}, read leukedge/+/cmd/#
          (on the central broker: a clinic's bridge)
The password is read from --password-file, or generated and saved to
DIR/secrets/NAME.password (mode 600): copy it to the device as its broker password file.
  --reload   ask the running broker to re-read the files (systemctl reload mosquitto)
  --dry-run  print the plan, change nothing
EOF
}

ETC=/etc/mosquitto/leukedge
ROLE=device
PASSWORD_FILE=
RELOAD=0
NAME=
while [[ $# -gt 0 ]]; do
    case $1 in
    --dry-run) DRY_RUN=1 ;;
    --etc) ETC=${2:?--etc needs a directory}; shift ;;
    --role) ROLE=${2:?--role needs device, lab or bridge}; shift ;;
    --password-file) PASSWORD_FILE=${2:?--password-file needs a file}; shift ;;
    --reload) RELOAD=1 ;;
    -h | --help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option: $1" ;;
    *) [[ -z $NAME ]] || die "one NAME only (got '$NAME' and '$1')"; NAME=$1 ;;
    esac
    shift
done
[[ -n $NAME ]] || { usage >&2; die "NAME is required"; }
valid_name "$NAME" || die "NAME '$NAME': use letters, digits, '.', '_' or '-' (no '/', '+', '#', spaces)"
[[ -z $PASSWORD_FILE || -r $PASSWORD_FILE ]] || die "--password-file $PASSWORD_FILE: cannot read it"

acl_rules() {
    # the node id Home Assistant accepts in a discovery topic (edge/homeassistant.py node_id)
    local node=${NAME//[^A-Za-z0-9_-]/_}
    case $ROLE in
    device) printf '%s\n' \
        "# device $NAME: publishes only under its own prefix (and its own HA discovery configs), reads only its own commands" \
        "user $NAME" "topic write leukedge/$NAME/#" "topic read leukedge/$NAME/cmd/#" \
        "topic write homeassistant/+/$node/#" ;;
    lab) printf '%s\n' \
        "# lab integrator $NAME: reads every device, may send commands" \
        "user $NAME" "topic read leukedge/+/#" "topic write leukedge/+/cmd/#" "topic read homeassistant/#" ;;
    bridge) printf '%s\n' \
        "# clinic bridge $NAME: forwards results up, commands down" \
        "user $NAME" "topic write leukedge/+/result" "topic write leukedge/+/sample" \
        "topic write leukedge/+/status" "topic write leukedge/+/info" \
        "topic write leukedge/+/stats" "topic write leukedge/+/event" "topic read leukedge/+/cmd/#" ;;
    *) die "--role must be device, lab or bridge, got '$ROLE'" ;;
    esac
}
RULES=$(acl_rules)
need mosquitto_passwd "apt-get install mosquitto"

SECRET=$ETC/secrets/$NAME.password
if [[ -n $PASSWORD_FILE ]]; then
    SECRET=$PASSWORD_FILE
elif [[ -f $SECRET ]]; then
    say "reusing the password in $SECRET"
else
    say "generating a password for $NAME into $SECRET (mode 600)"
    run mkdir -p "$ETC/secrets"
    run chmod 700 "$ETC/secrets"
    # Letters and digits only: safe in YAML, URLs and shell without quoting.
    if [[ $DRY_RUN == 1 ]]; then
        printf '[dry-run] write %s (mode 600): 32 random letters and digits from openssl rand\n' "$SECRET"
    else
        pw=$(openssl rand -base64 48 | tr -dc 'A-Za-z0-9')
        printf '%s\n' "${pw:0:32}" | write_secret "$SECRET" 600
        unset pw
    fi
fi

say "setting the password of $NAME in $ETC/passwd"
run mkdir -p "$ETC"
if [[ $DRY_RUN == 1 ]]; then
    printf '[dry-run] mosquitto_passwd %s %s  (password from %s on stdin)\n' \
        "$ETC/passwd" "$NAME" "$SECRET"
else
    create=()
    [[ -f $ETC/passwd ]] || create=(-c)
    pw=$(head -n1 "$SECRET")
    [[ -n $pw ]] || die "$SECRET is empty"
    printf '%s\n%s\n' "$pw" "$pw" | mosquitto_passwd "${create[@]}" "$ETC/passwd" "$NAME" >/dev/null
    unset pw
    chmod 640 "$ETC/passwd"
fi

if [[ -f $ETC/acl ]] && grep -qx "user $NAME" "$ETC/acl"; then
    say "$ETC/acl already has rules for $NAME (left as they are)"
else
    say "adding $ROLE rules for $NAME to $ETC/acl"
    if [[ $DRY_RUN == 1 ]]; then
        printf '[dry-run] append to %s:\n' "$ETC/acl"
        printf '%s\n' "$RULES" | sed 's/^/    | /'
    else
        printf '\n%s\n' "$RULES" >>"$ETC/acl"
        chmod 640 "$ETC/acl"
    fi
fi

if [[ $RELOAD == 1 ]]; then
    run systemctl reload mosquitto
else
    say "the broker reads the change on: systemctl reload mosquitto"
fi
