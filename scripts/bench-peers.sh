#!/usr/bin/env bash
# Coffer's remote mode against what people would otherwise run remotely:
# restic with rest-server over HTTPS, and kopia's repository server (HTTPS).
# Usage: scripts/bench-peers.sh COFFER_BINARY [DATASET_DIR]   (RUNS=8 by default)
#
# Peers are taken from $RESTIC, $REST_SERVER and $KOPIA, else from PATH; a
# peer whose binaries are missing is skipped with a message. Every server
# listens on 127.0.0.1 with TLS (coffer its own CA; the peers a self-signed
# ECDSA P-256 certificate, like coffer's, made here with openssl): restic is
# given it with --cacert, kopia pins its SHA-256 fingerprint.
#
# Each round, in an order that rotates from round to round, every tool runs
# first backup, unchanged re-run (a second backup of the same data into the
# same repository) and restore, against a fresh empty repository (coffer: a
# new vault on its server; restic: a new repository on rest-server; kopia: a
# new repository and a server started for it) with a fresh client state
# (coffer's COFFER_HOME, restic's and kopia's caches, which each tool uses
# by default and keeps for the re-run and the restore). Nothing is dropped
# from the page cache; the data set is read once before the first round.
# Server start, repository creation and connecting are not timed.
#
# Restored trees are kept until the end of the run, each in its own
# directory: ext4 skips inodes freed moments ago when it allocates new
# ones, so deleting one tool's restored files would slow the next tool's
# restore (by 5-10 times for the tree set). The disk must hold a restore per
# tool and round.
#
# Output: per tool and phase the medians of wall seconds, the client's peak
# RSS, the client's CPU seconds (user+sys) and the server's CPU seconds during
# the phase; each server's peak RSS; then coffer ÷ each peer and coffer ÷ the
# fastest peer per phase (wall time; lower is better). RAW=1 also prints
# every round's numbers.
set -euo pipefail
COFFER=$(readlink -f "${1:?path to a built coffer binary}")
DATA=$(readlink -f "${2:-/tmp/coffer-bench-data/mixed}")
RUNS=${RUNS:-8}
[ -d "$DATA" ] || { echo "no data set at $DATA (../shared/bench/mkdata.sh builds one)" >&2; exit 1; }
RESTIC=${RESTIC:-$(command -v restic || true)}
REST_SERVER=${REST_SERVER:-$(command -v rest-server || true)}
KOPIA=${KOPIA:-$(command -v kopia || true)}
TOOLS=(coffer)
if [ -n "$RESTIC" ] && [ -x "$RESTIC" ] && [ -n "$REST_SERVER" ] && [ -x "$REST_SERVER" ]; then TOOLS+=(restic)
else echo "skipping restic: needs restic (${RESTIC:-not found}) and rest-server (${REST_SERVER:-not found}); set RESTIC, REST_SERVER or PATH" >&2; fi
if [ -n "$KOPIA" ] && [ -x "$KOPIA" ]; then TOOLS+=(kopia)
else echo "skipping kopia: no kopia binary found; set KOPIA or PATH" >&2; fi
[ ${#TOOLS[@]} -gt 1 ] || echo "no peer available: only coffer is measured" >&2

W=$(mktemp -d /tmp/coffer-bench-peers.XXXX)
PIDS=()
KSRV=   # the current round's kopia server, if one is running
cleanup() { for p in "${PIDS[@]}" $KSRV; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
HZ=$(getconf CLK_TCK)
BASEPORT=$((20000 + RANDOM % 20000))
NFILES=$(find "$DATA" -type f | wc -l)
find "$DATA" -type f -exec cat {} + >/dev/null   # warm the page cache once
# Whether the machine was idle: a load average that looks low can hide
# other work (the kernel's CPU pressure says how much of the time tasks
# waited for a core); a busy machine moves wall times far more than code.
machine() { echo "machine at $1: load $(cut -d' ' -f1-3 /proc/loadavg); cpu pressure $(awk '/^some/{print $2, $3}' /proc/pressure/cpu 2>/dev/null || echo unknown)"; }
machine start >&2

srvcpu() { awk '{print $14 + $15}' "/proc/$SRVPID/stat" 2>/dev/null || echo 0; }
peak() { awk '/VmHWM/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
timed() { # tool phase cmd... -> appends "wall rss_kb client_cpu server_cpu" to $W/tool.phase
  local s0 s1
  s0=$(srvcpu)
  /usr/bin/time -f "%e %M %U %S" -o "$W/t" "${@:3}" >"$W/log" 2>&1 || { echo "$1 $2 FAILED: $(tail -3 "$W/log")" >&2; exit 1; }
  s1=$(srvcpu)
  awk -v s="$(( s1 - s0 ))" -v hz="$HZ" '{printf "%s %s %.2f %.2f\n", $1, $2, $3 + $4, s / hz}' "$W/t" >>"$W/$1.$2"
}
check_restore() { # tool dir: the restored tree holds as many files as the data set
  local n; n=$(find "$2" -type f | wc -l)
  [ "$n" -eq "$NFILES" ] || echo "warning: $1 restored $n files, the data set has $NFILES" >&2
}
wait_for() { # file pattern: up to 20 s
  for _ in $(seq 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "timed out waiting for '$2' in $1: $(tail -3 "$1")" >&2; exit 1
}

# The peers' certificate: self-signed, for 127.0.0.1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
FINGERPRINT=$(openssl x509 -in "$W/cert.pem" -noout -fingerprint -sha256 | cut -d= -f2 | tr -d : | tr A-F a-f)

# coffer: one server for all rounds, a new vault each round.
CPORT=$BASEPORT
"$COFFER" server --data "$W/c-srv" --listen "127.0.0.1:$CPORT" >"$W/c-srv.out" 2>"$W/c-srv.log" &
CSRV=$!; PIDS+=("$CSRV")
for _ in $(seq 200); do [ -s "$W/c-srv/initial-owner-token" ] && grep -q listening "$W/c-srv.out" && break; sleep 0.1; done
grep -q listening "$W/c-srv.out" || { echo "coffer server did not start: $(tail -3 "$W/c-srv.log")" >&2; exit 1; }
export COFFER_CACERT="$W/c-srv/tls/ca.pem" COFFER_TOKEN="$(cat "$W/c-srv/initial-owner-token")"
run_coffer() { # round
  local url="https://127.0.0.1:$CPORT"
  rm -rf "$W/c-home"
  export COFFER_HOME="$W/c-home"
  "$COFFER" vault create "b$1" --vault "$url" >/dev/null
  SRVPID=$CSRV
  timed coffer backup "$COFFER" backup "$DATA" --vault "$url/b$1"
  timed coffer rerun "$COFFER" backup "$DATA" --vault "$url/b$1"
  timed coffer restore "$COFFER" restore latest --vault "$url/b$1" --target "$W/out-coffer-$1"
  check_restore coffer "$W/out-coffer-$1"
  rm -rf "$W/c-srv/vaults"/*/store/packs
}

# restic: one rest-server (authentication on, uploads verified: its defaults) for all rounds, a new repository each round.
if [[ " ${TOOLS[*]} " == *" restic "* ]]; then
  RPORT=$((BASEPORT + 1))
  mkdir -p "$W/rest"
  printf 'bench:{SHA}%s\n' "$(printf bench | openssl dgst -sha1 -binary | base64)" >"$W/rest/.htpasswd"
  "$REST_SERVER" --path "$W/rest" --listen "127.0.0.1:$RPORT" --tls --tls-cert "$W/cert.pem" --tls-key "$W/key.pem" >"$W/rest.log" 2>&1 &
  RSRV=$!; PIDS+=("$RSRV")
  wait_for "$W/rest.log" "start server"
  echo bench >"$W/restic.pass"
fi
run_restic() { # round
  rm -rf "$W/restic-cache"
  export RESTIC_PASSWORD_FILE="$W/restic.pass" RESTIC_CACHE_DIR="$W/restic-cache"
  export RESTIC_REPOSITORY="rest:https://bench:bench@127.0.0.1:$RPORT/r$1/"
  "$RESTIC" init --cacert "$W/cert.pem" >"$W/log" 2>&1 || { echo "restic init FAILED: $(tail -3 "$W/log")" >&2; exit 1; }
  SRVPID=$RSRV
  timed restic backup "$RESTIC" backup --cacert "$W/cert.pem" "$DATA"
  timed restic rerun "$RESTIC" backup --cacert "$W/cert.pem" "$DATA"
  timed restic restore "$RESTIC" restore latest --cacert "$W/cert.pem" --target "$W/out-restic-$1"
  check_restore restic "$W/out-restic-$1"
  rm -rf "$W/rest/r$1"
}

# kopia: a server serves one repository, so each round creates a repository and starts a server for it.
export KOPIA_CHECK_FOR_UPDATES=false KOPIA_PASSWORD=bench
KPEAK=0
run_kopia() { # round
  local kport=$((BASEPORT + 2)) s=$W/k-srv c=$W/k-cli sid
  rm -rf "$s" "$c" "$W/k-repo"; mkdir -p "$s" "$c"
  local sflags=(--config-file="$s/repository.config" --log-dir="$s/logs")
  "$KOPIA" repository create filesystem --path "$W/k-repo" "${sflags[@]}" --cache-directory="$s/cache" --override-username=server --override-hostname=server >"$s/out" 2>&1 \
    || { echo "kopia repository create FAILED: $(tail -3 "$s/out")" >&2; exit 1; }
  # Run as the repository's owner, this also does the new repository's first (full) maintenance, untimed.
  "$KOPIA" server users add bench@bench --user-password=bench "${sflags[@]}" >>"$s/out" 2>&1 \
    || { echo "kopia server users add FAILED: $(tail -3 "$s/out")" >&2; exit 1; }
  KOPIA_SERVER_PASSWORD=ui KOPIA_SERVER_CONTROL_PASSWORD=control "$KOPIA" server start "${sflags[@]}" --cache-directory="$s/cache" --no-ui \
    --address="https://127.0.0.1:$kport" --tls-cert-file="$W/cert.pem" --tls-key-file="$W/key.pem" >"$s/server.log" 2>&1 &
  KSRV=$!
  wait_for "$s/server.log" "SERVER ADDRESS"
  local cflags=(--config-file="$c/repository.config" --log-dir="$c/logs")
  "$KOPIA" repository connect server --url="https://127.0.0.1:$kport" --server-cert-fingerprint="$FINGERPRINT" \
    --override-username=bench --override-hostname=bench --cache-directory="$c/cache" "${cflags[@]}" >"$c/out" 2>&1 \
    || { echo "kopia connect FAILED: $(tail -3 "$c/out")" >&2; exit 1; }
  SRVPID=$KSRV
  timed kopia backup "$KOPIA" snapshot create "$DATA" "${cflags[@]}"
  timed kopia rerun "$KOPIA" snapshot create "$DATA" "${cflags[@]}"
  sid=$(sed -n 's/.*Created snapshot with root .* and ID \([0-9a-f]*\).*/\1/p' "$W/log" | tail -1)
  [ -n "$sid" ] || { echo "kopia: no snapshot ID in: $(tail -3 "$W/log")" >&2; exit 1; }
  timed kopia restore "$KOPIA" snapshot restore "$sid" "$W/out-kopia-$1" "${cflags[@]}"
  check_restore kopia "$W/out-kopia-$1"
  local p; p=$(peak "$KSRV"); [ "${p:-0}" -gt "$KPEAK" ] && KPEAK=$p
  kill "$KSRV"; wait "$KSRV" 2>/dev/null || true; KSRV=
  rm -rf "$W/k-repo"
}

n=${#TOOLS[@]}
for i in $(seq "$RUNS"); do
  for j in $(seq 0 $((n - 1))); do
    t=${TOOLS[$(( (i - 1 + j) % n ))]}
    "run_$t" "$i"
  done
done

median() { sort -n | awk '{a[NR]=$1} END{print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
col() { cut -d' ' -f"$2" "$W/$1" | median; }
echo "tool phase wall_s client_rss_kb client_cpu_s server_cpu_s   (medians of $RUNS rounds, $DATA, $NFILES files)"
for t in "${TOOLS[@]}"; do for p in backup rerun restore; do
  echo "$t $p $(col "$t.$p" 1) $(col "$t.$p" 2) $(col "$t.$p" 3) $(col "$t.$p" 4)"
done; done | tee "$W/summary"
if [ -n "${RAW:-}" ]; then   # RAW=1: every round's numbers, in the order the rounds ran
  for t in "${TOOLS[@]}"; do for p in backup rerun restore; do echo "raw $t $p: $(tr '\n' ',' <"$W/$t.$p" | sed 's/,$//')"; done; done
fi
machine end
echo "server peak RSS (VmHWM): coffer $(peak "$CSRV") KB (all rounds, one process)$([ -n "${RSRV:-}" ] && echo ", rest-server $(peak "$RSRV") KB (all rounds)")$([ "$KPEAK" -gt 0 ] && echo ", kopia $KPEAK KB (largest of its per-round servers)")"
for p in backup rerun restore; do
  awk -v p="$p" -v tools="${TOOLS[*]}" '$2 == p { t[$1] = $3 }
    END {
      line = "ratio " p ":"; best = ""; n = split(tools, order, " ")
      for (i = 2; i <= n; i++) { k = order[i]
        line = line sprintf(" coffer/%s %s", k, (t[k] > 0) ? sprintf("%.2f", t["coffer"] / t[k]) : "n/a")
        if (best == "" || t[k] < t[best]) best = k
      }
      if (best != "") line = line sprintf(" | coffer/fastest (%s) %s", best, (t[best] > 0) ? sprintf("%.2f", t["coffer"] / t[best]) : "n/a"); else line = line " no peer measured"
      print line
    }' "$W/summary"
done
