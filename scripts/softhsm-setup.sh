#!/usr/bin/env bash
# softhsm-setup.sh DIR: makes a throwaway SoftHSM2 token for Coffer's PKCS#11
# key provider (internal/keys/pkcs11), entirely under DIR.
#
#   DIR/softhsm2.conf   SoftHSM2 config (never the system's /etc/softhsm)
#   DIR/tokens/         token directory
#
# The token is labelled "coffer" (user PIN 1234, SO PIN 5678) and holds
#   backup-kek  id 01  RSA-3072 key pair, generated with openssl, imported
#   backup-aes  id 02  AES-256 secret key generated inside the token
#                      (sensitive, not extractable, encrypt/decrypt)
#
# On success the last line on stdout is `export SOFTHSM2_CONF=DIR/softhsm2.conf`
# (everything else goes to stderr), so `eval "$(scripts/softhsm-setup.sh D)"`
# works. Running it again on a DIR it set up reuses that token; a DIR that is
# not empty and was not made by this script is refused, never overwritten.
#
# Needs: softhsm2 and opensc (pkcs11-tool) from Debian, openssl.
# SOFTHSM2_MODULE overrides the module path.
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
module=${SOFTHSM2_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
for tool in softhsm2-util pkcs11-tool openssl; do
  command -v "$tool" >/dev/null || { echo "$0: $tool not found (apt-get install -y softhsm2 opensc openssl)" >&2; exit 1; }
done
[ -e "$module" ] || { echo "$0: PKCS#11 module $module not found (apt-get install -y softhsm2)" >&2; exit 1; }

mkdir -p "$1"
dir=$(cd "$1" && pwd -P)
conf=$dir/softhsm2.conf
marker=$dir/.coffer-softhsm-ready

if [ -e "$marker" ]; then
  # Made by an earlier run: reuse it as it is.
  echo "export SOFTHSM2_CONF=$conf"
  exit 0
fi
if [ -n "$(ls -A "$dir")" ]; then
  echo "$0: $dir is not empty and was not set up by this script (no $marker; a run that failed midway leaves it so): refusing to touch it; pass a new or empty directory" >&2
  exit 1
fi

umask 077
mkdir "$dir/tokens" # not -p: of two runs racing on one empty DIR, the second stops here
# log.level ERROR keeps SoftHSM2 from filling syslog during tests.
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' \
  "$dir/tokens" >"$conf"
export SOFTHSM2_CONF=$conf

softhsm2-util --init-token --free --label coffer --pin 1234 --so-pin 5678 >&2

# The RSA key is generated in software and imported (SoftHSM2 cannot import a
# key it generated elsewhere any other way); the PEM files live in a private
# temporary directory under DIR and are removed right after the import.
work=$(mktemp -d "$dir/.keygen.XXXXXX")
trap 'rm -rf "$work"' EXIT
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$work/k.pem" 2>/dev/null
openssl pkcs8 -topk8 -nocrypt -in "$work/k.pem" -out "$work/k8.pem"
softhsm2-util --import "$work/k8.pem" --token coffer --label backup-kek --id 01 --pin 1234 >&2
rm -rf "$work"

# The AES key never exists outside the token.
pkcs11-tool --module "$module" --token-label coffer --login --pin 1234 \
  --keygen --key-type aes:32 --label backup-aes --id 02 \
  --usage-decrypt --sensitive >&2

touch "$marker"
echo "export SOFTHSM2_CONF=$conf"
