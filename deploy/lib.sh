# shellcheck shell=bash
# Shared helpers for the deploy scripts (sourced, not run).
#
# Every script takes --dry-run: then `run` prints each command instead of running it and
# `write_file` prints what it would write, so the printed plan is exactly what a real run
# does. Secrets are never printed, in either mode.

DRY_RUN=${DRY_RUN:-0}

say() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 2
}

# run CMD ARGS...: run a command, or print it (shell-quoted) under --dry-run.
run() {
    if [[ $DRY_RUN == 1 ]]; then
        printf '[dry-run]'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

# write_file DEST MODE: write stdin to DEST with MODE (atomically, via a temp file).
write_file() {
    local dest=$1 mode=$2 tmp
    if [[ $DRY_RUN == 1 ]]; then
        printf '[dry-run] write %s (mode %s):\n' "$dest" "$mode"
        sed 's/^/    | /'
        return 0
    fi
    tmp=$(mktemp "${dest}.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$dest"
}

# write_secret DEST MODE: like write_file but never echoes the content.
write_secret() {
    local dest=$1 mode=$2 tmp
    if [[ $DRY_RUN == 1 ]]; then
        cat >/dev/null
        printf '[dry-run] write %s (mode %s, secret: content not shown)\n' "$dest" "$mode"
        return 0
    fi
    tmp=$(mktemp "${dest}.XXXXXX")
    chmod "$mode" "$tmp"
    cat >"$tmp"
    mv -f "$tmp" "$dest"
}

need() {
    command -v "$1" >/dev/null 2>&1 || die "$1 not found (install: $2)"
}

need_root() {
    [[ $DRY_RUN == 1 || $(id -u) == 0 ]] || die "run as root (sudo $0 $*), or with --dry-run to see the plan"
}

# A device or user name that is safe inside an MQTT topic and an ACL line:
# no wildcards (+ #), no slash, no spaces.
valid_name() {
    [[ $1 =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$ ]]
}
