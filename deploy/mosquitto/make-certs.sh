#!/usr/bin/env bash
# Make a self-signed CA, a broker certificate and client certificates with openssl.
#
# A clinic has no public hostname, so a small private CA is the practical way to give
# the edge broker TLS: devices and lab integrators trust ca.crt, and nothing else.
# Re-running keeps an existing CA and adds certificates signed by it.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=deploy/lib.sh
source "$HERE/../lib.sh"

usage() {
    cat <<EOF
Usage: $(basename "$0") [--dry-run] [--out DIR] [--days N] [--host NAME]... [--ip ADDR]...
                     [--client NAME]... [--no-server]

Writes into DIR (default: ./certs), EC P-256 keys (mode 600):
  ca.key, ca.crt          the clinic CA (kept if it already exists)
  server.key, server.crt  the broker's certificate; subjectAltName = every --host and --ip
                          (default: this host's name, localhost, 127.0.0.1)
  NAME.key, NAME.crt      a client certificate per --client (CN = NAME)
Options:
  --days N     validity of new certificates in days (default 825; the CA gets 3650)
  --no-server  do not make a server certificate (only clients)
  --dry-run    print the openssl commands, write nothing
EOF
}

OUT=./certs
DAYS=825
HOSTS=()
IPS=()
CLIENTS=()
SERVER=1
while [[ $# -gt 0 ]]; do
    case $1 in
    --dry-run) DRY_RUN=1 ;;
    --out) OUT=${2:?--out needs a directory}; shift ;;
    --days) DAYS=${2:?--days needs a number}; shift ;;
    --host) HOSTS+=("${2:?--host needs a name}"); shift ;;
    --ip) IPS+=("${2:?--ip needs an address}"); shift ;;
    --client) CLIENTS+=("${2:?--client needs a name}"); shift ;;
    --no-server) SERVER=0 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
    esac
    shift
done
[[ $DAYS =~ ^[0-9]+$ && $DAYS -gt 0 ]] || die "--days must be a positive number, got '$DAYS'"
if [[ ${#HOSTS[@]} -eq 0 && ${#IPS[@]} -eq 0 ]]; then
    HOSTS=("$(hostname)" localhost)
    IPS=(127.0.0.1)
fi
for name in "${CLIENTS[@]}"; do
    valid_name "$name" || die "--client '$name': use letters, digits, '.', '_' or '-' only"
done
need openssl "apt-get install openssl"

umask 077
run mkdir -p "$OUT"
KEYOPT=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)

if [[ -f $OUT/ca.key && -f $OUT/ca.crt ]]; then
    say "keeping the existing CA in $OUT"
else
    say "making the CA: $OUT/ca.crt"
    run openssl req -x509 -new "${KEYOPT[@]}" -keyout "$OUT/ca.key" -out "$OUT/ca.crt" \
        -days 3650 -subj "/CN=leukedge clinic CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign"
fi

# sign NAME CN EXTENSIONS: a key and a certificate signed by the CA.
sign() {
    local name=$1 cn=$2 ext=$3
    run openssl req -new "${KEYOPT[@]}" -keyout "$OUT/$name.key" -out "$OUT/$name.csr" -subj "/CN=$cn"
    printf '%s\n' "$ext" "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid,issuer" \
        | write_file "$OUT/$name.ext" 600
    run openssl x509 -req -in "$OUT/$name.csr" -CA "$OUT/ca.crt" -CAkey "$OUT/ca.key" \
        -CAcreateserial -days "$DAYS" -sha256 -extfile "$OUT/$name.ext" -out "$OUT/$name.crt"
    run rm -f "$OUT/$name.csr" "$OUT/$name.ext"
    run chmod 644 "$OUT/$name.crt"
}

if [[ $SERVER == 1 ]]; then
    san=()
    for h in "${HOSTS[@]}"; do san+=("DNS:$h"); done
    for ip in "${IPS[@]}"; do san+=("IP:$ip"); done
    san_list=$(IFS=,; echo "${san[*]}")
    say "making the broker certificate: $OUT/server.crt (subjectAltName $san_list)"
    sign server "${HOSTS[0]:-${IPS[0]}}" "$(printf '%s\n' \
        "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=serverAuth" \
        "subjectAltName=$san_list")"
fi

for name in "${CLIENTS[@]}"; do
    say "making a client certificate: $OUT/$name.crt"
    sign "$name" "$name" "$(printf '%s\n' \
        "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=clientAuth")"
done
run chmod 644 "$OUT/ca.crt"
say "done: give devices and integrators $OUT/ca.crt; keep $OUT/ca.key offline if you can"
