#!/usr/bin/env bash
# Local vault against vault server over loopback TLS, same binary, same data.
# Usage: scripts/bench-remote.sh COFFER_BINARY [DATASET_DIR]   (RUNS=5 by default)
# STORE=s3: the server keeps the vaults' stores in a bucket with Object Lock
# on a versitygw (posix backend, --versioning-dir) on loopback, started here
# (scripts/versitygw.sh installs it; the bucket is made with the aws CLI).
# Prints the median wall time and peak RSS of each phase (first backup,
# unchanged re-run: a second backup of the same data into the same vault,
# restore) and the ratio remote/local, then each round's times and ratio.
# Each round starts from an empty vault and an empty agent home
# ($COFFER_HOME: pins, tokens) on both sides, and the two modes alternate,
# so both see the same cache and memory conditions.
# Nothing is dropped from the page cache; the data set is read once first.
# Each phase also records the processor time (user + system) the agent,
# the server and, with STORE=s3, versitygw spent on it, and their sum
# against the local mode's: on a machine shared with other work these move
# less than wall times do.
# S3_ETAG=checksum starts versitygw with --data-integrity-etag (ETags from
# the CRC32C each upload carries instead of an MD5 of every object).
# S3_TLS=1 serves the bucket over https (a self-signed certificate made
# with openssl, given to coffer with ca-file=), as S3 is deployed.
set -euo pipefail
COFFER=$(readlink -f "${1:?path to a built coffer binary}")
DATA=${2:-/tmp/coffer-bench-data/mixed}
RUNS=${RUNS:-5}
[ -d "$DATA" ] || { echo "no data set at $DATA (../shared/bench/mkdata.sh builds one)" >&2; exit 1; }
W=$(mktemp -d /tmp/coffer-bench-remote.XXXX)
PORT=$((20000 + RANDOM % 20000))
cleanup() { [ -n "${SRV:-}" ] && kill "$SRV" 2>/dev/null; [ -n "${GW:-}" ] && kill "$GW" 2>/dev/null; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
STOREARGS=()
[ -z "${S3_ETAG:-}" ] || [ "$S3_ETAG" = checksum ] || { echo "S3_ETAG: checksum or nothing" >&2; exit 1; }
if [ "${STORE:-dir}" = s3 ]; then
  GWBIN=$("$(dirname "$0")/versitygw.sh")
  GWPORT=$((PORT + 1))
  export AWS_ACCESS_KEY_ID=benchaccess AWS_SECRET_ACCESS_KEY=benchsecret AWS_DEFAULT_REGION=us-east-1
  mkdir -p "$W/gw/data" "$W/gw/versions"
  SCHEME=http TLSARGS=() CAQ="" CURLCA=() AWSCA=()
  if [ -n "${S3_TLS:-}" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=127.0.0.1 \
      -addext subjectAltName=IP:127.0.0.1 -keyout "$W/gw/key.pem" -out "$W/gw/cert.pem" 2>/dev/null
    SCHEME=https TLSARGS=(--cert "$W/gw/cert.pem" --key "$W/gw/key.pem") CAQ="&ca-file=$W/gw/cert.pem"
    CURLCA=(--cacert "$W/gw/cert.pem") AWSCA=(--ca-bundle "$W/gw/cert.pem")
  fi
  "$GWBIN" --port "127.0.0.1:$GWPORT" --access "$AWS_ACCESS_KEY_ID" --secret "$AWS_SECRET_ACCESS_KEY" --keep-alive "${TLSARGS[@]}" \
    posix ${S3_ETAG:+--data-integrity-etag} --versioning-dir "$W/gw/versions" "$W/gw/data" >"$W/gw.log" 2>&1 &
  GW=$!
  for _ in $(seq 50); do curl -s "${CURLCA[@]}" -o /dev/null "$SCHEME://127.0.0.1:$GWPORT/" && break; sleep 0.1; done
  aws "${AWSCA[@]}" --endpoint-url "$SCHEME://127.0.0.1:$GWPORT" s3api create-bucket --bucket bench --object-lock-enabled-for-bucket >/dev/null
  aws "${AWSCA[@]}" --endpoint-url "$SCHEME://127.0.0.1:$GWPORT" s3api put-bucket-versioning --bucket bench --versioning-configuration Status=Enabled
  STOREARGS=(--store "s3://bench/coffer?endpoint=$SCHEME://127.0.0.1:$GWPORT&region=us-east-1$CAQ")
fi
"$COFFER" server --data "$W/srv" --listen "127.0.0.1:$PORT" "${STOREARGS[@]}" >"$W/srv.out" 2>"$W/srv.log" &
SRV=$!
for _ in $(seq 50); do [ -s "$W/srv/initial-owner-token" ] && grep -q listening "$W/srv.out" && break; sleep 0.1; done
export COFFER_CACERT="$W/srv/tls/ca.pem" COFFER_TOKEN="$(cat "$W/srv/initial-owner-token")"
URL="https://127.0.0.1:$PORT"
find "$DATA" -type f -exec cat {} + >/dev/null
cpu() { [ -n "${1:-}" ] && awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; } # clock ticks
timed() { # label cmd...
  local s0 g0
  s0=$(cpu "$SRV"); g0=$(cpu "${GW:-}")
  /usr/bin/time -f "%e %M %U %S" -o "$W/t" "${@:2}" >/dev/null 2>"$W/err" || { echo "$1 FAILED: $(tail -3 "$W/err")" >&2; exit 1; }
  cat "$W/t" >>"$W/$1"
  echo "$(( $(cpu "$SRV") - s0 )) $(( $(cpu "${GW:-}") - g0 ))" >>"$W/$1.cpu"
}
for i in $(seq "$RUNS"); do
  rm -rf "$W/home" "$W/rhome" "$W/out-l" "$W/out-r" "$W/srv/vaults"/*/store/packs
  export COFFER_HOME="$W/home"
  timed local.backup "$COFFER" backup "$DATA"
  timed local.rerun "$COFFER" backup "$DATA"
  timed local.restore "$COFFER" restore latest --target "$W/out-l"
  rm -rf "$W/home" "$W/out-l"
  export COFFER_HOME="$W/rhome"   # the agent's own state, kept out of the user's home
  "$COFFER" vault create "b$i" --vault "$URL" >/dev/null
  timed remote.backup "$COFFER" backup "$DATA" --vault "$URL/b$i"
  timed remote.rerun "$COFFER" backup "$DATA" --vault "$URL/b$i"
  timed remote.restore "$COFFER" restore latest --vault "$URL/b$i" --target "$W/out-r"
  rm -rf "$W/out-r"
done
median() { sort -n | awk '{a[NR]=$1} END{print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
for p in backup rerun restore; do
  l=$(cut -d' ' -f1 "$W/local.$p" | median); r=$(cut -d' ' -f1 "$W/remote.$p" | median)
  lm=$(cut -d' ' -f2 "$W/local.$p" | median); rm_=$(cut -d' ' -f2 "$W/remote.$p" | median)
  echo "local $p ${l}s ${lm}KB | remote $p ${r}s ${rm_}KB (agent) | ratio remote/local $(awk -v a="$r" -v b="$l" 'BEGIN{if (b>0) printf "%.2f", a/b; else printf "n/a"}')"
  echo "  rounds (local remote ratio): $(paste -d' ' <(cut -d' ' -f1 "$W/local.$p") <(cut -d' ' -f1 "$W/remote.$p") | awk '{printf "%s %s %.2f; ", $1, $2, ($1>0)? $2/$1 : 0}')"
  tck=$(getconf CLK_TCK)
  acpu() { awk '{printf "%.2f\n", $3+$4}' "$1" | median; }
  lc=$(acpu "$W/local.$p"); ac=$(acpu "$W/remote.$p")
  sc=$(cut -d' ' -f1 "$W/remote.$p.cpu" | median | awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", $1/t}')
  gc=$(cut -d' ' -f2 "$W/remote.$p.cpu" | median | awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", $1/t}')
  echo "  processor time (user+system), medians: local ${lc} s | remote: agent ${ac} s + server ${sc} s$([ -n "${GW:-}" ] && echo " + versitygw ${gc} s") = $(awk -v a="$ac" -v b="$sc" -v c="$([ -n "${GW:-}" ] && echo "$gc" || echo 0)" 'BEGIN{printf "%.2f", a+b+c}') s, $(awk -v a="$ac" -v b="$sc" -v c="$([ -n "${GW:-}" ] && echo "$gc" || echo 0)" -v l="$lc" 'BEGIN{if (l>0) printf "%.2f", (a+b+c)/l; else printf "n/a"}') of local"
  echo "  remote $p processor time, median: server $(cut -d' ' -f1 "$W/remote.$p.cpu" | median | awk -v t="$tck" '{printf "%.2f", $1/t}') s$([ -n "${GW:-}" ] && echo ", versitygw $(cut -d' ' -f2 "$W/remote.$p.cpu" | median | awk -v t="$tck" '{printf "%.2f", $1/t}') s")"
done
echo "server RSS: $(ps -o rss= -p "$SRV" 2>/dev/null | tr -d ' ' || echo ?) KB now, $(awk '/VmHWM/{print $2}' "/proc/$SRV/status" 2>/dev/null || echo ?) KB peak"
