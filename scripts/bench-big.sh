#!/usr/bin/env bash
# Big files into a growing vault: ROUNDS backups of GB gigabytes of
# incompressible data each into one repository, every round new data (the
# same file names, other contents), so the vault holds GB x r after round r.
# The rate must not fall and the peak memory must not grow from round to
# round. Usage: scripts/bench-big.sh COFFER_BINARY
#
# Environment:
#   GB       gigabytes (10^9 bytes) per round (default 12)
#   FILES    files the round's data is split into (default GB, 1 GB each)
#   ROUNDS   rounds (default 2)
#   TOOLS    the tools and their order (default "coffer"; "coffer restic"
#            and kopia as in bench-scale.sh, each a repository of its own)
#   WORK     the working directory (default a new /tmp/coffer-bench-big.XXXX,
#            removed at the end); it needs GB x (1 + ROUNDS x tools) free
#   SETTLE   seconds to wait after writing a round's data (default 30), so
#            its write-back is not charged to the backup
#   MODE     local (default): Coffer backs up into a local vault; remote:
#            through a vault server on loopback TLS (coffer server, the
#            vault in its data directory), whose CPU seconds and peak RSS
#            are then printed too
#
# Each round: scripts/mktree -big writes the data (seed = the round, the
# files rewritten in place, so only one round's data is ever on disk), sync,
# then each tool backs it up. Output per tool and round: wall seconds, MB/s
# of data read, peak RSS (/usr/bin/time), CPU seconds, Coffer's garbage
# collections, the repository's size after it, and each round's time and
# RSS against the first round's, and the share of its wall time in which
# some task on the machine waited for a core (cpuw%) or for I/O (iow%),
# from /proc/pressure; the load and CPU pressure before each backup and at
# the end.
set -euo pipefail
COFFER=$(readlink -f "${1:?usage: bench-big.sh COFFER_BINARY}")
GB=${GB:-12}
FILES=${FILES:-$GB}
ROUNDS=${ROUNDS:-2}
SETTLE=${SETTLE:-30}
MODE=${MODE:-local}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib/timed.sh"
pick_tools "coffer"
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (Debian: apt-get install time)" >&2; exit 1; }
[ $((GB * 1000 % FILES)) -eq 0 ] || { echo "GB x 1000 must be a multiple of FILES" >&2; exit 2; }
case $MODE in local | remote) ;; *) echo "MODE: local or remote" >&2; exit 2 ;; esac

if [ -n "${WORK:-}" ]; then W=$WORK; mkdir -p "$W"; else W=$(mktemp -d /tmp/coffer-bench-big.XXXX); fi
W=$(readlink -f "$W")
cleanup() {
  if [ -n "${SRV:-}" ]; then kill "$SRV" 2>/dev/null || true; wait "$SRV" 2>/dev/null || true; fi
  [ -n "${KEEP:-}" ] || rm -rf "$W"
}
trap cleanup EXIT
DATA=$W/data
BYTES=$((GB * 1000000000))
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$W/restic-cache KOPIA_PASSWORD=bench KOPIA_CHECK_FOR_UPDATES=false
export COFFER_HOME=$W/c-home
KFLAGS=(--config-file="$W/k-cfg/repository.config" --log-dir="$W/k-cfg/logs")
kopia_run() { "$KOPIA" "$@" "${KFLAGS[@]}"; }

# timed NAME ROUND CMD...: writes "wall rss_kb cpu_s gcs" to $W/NAME.ROUND.
repo() { case $1 in coffer) [ "$MODE" = remote ] && echo "$W/srv/vaults" || echo "$COFFER_HOME" ;; *) echo "$W/r-$1" ;; esac; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # clock ticks
# stall cpu|io: microseconds some task has waited for a core (for I/O) since
# boot, machine-wide; over a backup, against its wall time, how much of it
# the machine was contended.
stall() { awk -F'total=' '/^some/{print $2}' "/proc/pressure/$1" 2>/dev/null || echo 0; }

CVAULT=()
if [ "$MODE" = remote ]; then
  PORT=$((20000 + RANDOM % 20000))
  "$COFFER" server --data "$W/srv" --listen "127.0.0.1:$PORT" >"$W/srv.out" 2>"$W/srv.log" &
  SRV=$!
  for _ in $(seq 100); do [ -s "$W/srv/initial-owner-token" ] && grep -q listening "$W/srv.out" && break; sleep 0.1; done
  grep -q listening "$W/srv.out" || { echo "server did not start: $(tail -3 "$W/srv.log")" >&2; exit 1; }
  export COFFER_CACERT="$W/srv/tls/ca.pem" COFFER_TOKEN="$(cat "$W/srv/initial-owner-token")"
  "$COFFER" vault create big --vault "https://127.0.0.1:$PORT" >/dev/null
  CVAULT=(--vault "https://127.0.0.1:$PORT/big")
fi

for t in "${TOOLS[@]}"; do
  case $t in
    restic) "$RESTIC" -r "$W/r-restic" init >/dev/null ;;
    kopia)
      mkdir -p "$W/k-cfg"
      kopia_run repository create filesystem --path "$W/r-kopia" --cache-directory="$W/k-cfg/cache" \
        --override-username=bench --override-hostname=bench >"$W/k-cfg/out" 2>&1 \
        || { echo "kopia repository create FAILED: $(tail -3 "$W/k-cfg/out")" >&2; exit 1; } ;;
  esac
done

(cd "$HERE" && go build -o "$W/mktree" ./mktree)
echo "$ROUNDS rounds of $GB GB in $FILES files; tools: ${TOOLS[*]}; coffer $MODE" >&2
for r in $(seq 1 "$ROUNDS"); do
  "$W/mktree" -big "$FILES" -size $((BYTES / FILES)) -seed "$r" "$DATA" >&2
  sync; sleep "$SETTLE"
  for t in "${TOOLS[@]}"; do
    echo "  round $r $t, $(machine)" >&2
    c0=$(stall cpu) i0=$(stall io)
    case $t in
      coffer)
        [ -z "${SRV:-}" ] || s0=$(cpu "$SRV")
        timed coffer "$r" "$COFFER" backup "$DATA" "${CVAULT[@]}"
        [ -z "${SRV:-}" ] || echo "$(( $(cpu "$SRV") - s0 )) $(awk '/VmHWM/{print $2}' "/proc/$SRV/status")" >"$W/server.$r"
        ;;
      restic) timed restic "$r" "$RESTIC" -r "$W/r-restic" backup "$DATA" ;;
      kopia) timed kopia "$r" "$KOPIA" snapshot create "$DATA" "${KFLAGS[@]}" ;;
    esac
    echo "$(( $(stall cpu) - c0 )) $(( $(stall io) - i0 ))" >"$W/$t.$r.stall"
    echo "$(du -sm "$(repo "$t")" | cut -f1)" >"$W/$t.$r.repo"
    echo "    repo $(cat "$W/$t.$r.repo") MB" >&2
  done
done

echo
echo "$ROUNDS x $GB GB ($FILES files a round), coffer $MODE; $(nproc) cores; at the end: $(machine)"
printf '%-7s %5s %9s %8s %8s %8s %6s %9s %8s %8s %6s %6s\n' tool round wall_s MB/s rss_MB cpu_s GCs repo_MB time/r1 rss/r1 cpuw% iow%
for t in "${TOOLS[@]}"; do
  read -r w1 m1 _ _ <"$W/$t.1"
  for r in $(seq 1 "$ROUNDS"); do
    read -r wall rss cpu gcs <"$W/$t.$r"
    read -r cw iw <"$W/$t.$r.stall"
    awk -v t="$t" -v r="$r" -v w="$wall" -v m="$rss" -v c="$cpu" -v g="$gcs" -v b="$BYTES" \
      -v rp="$(cat "$W/$t.$r.repo")" -v w1="$w1" -v m1="$m1" -v cw="$cw" -v iw="$iw" \
      'BEGIN{printf "%-7s %5d %9.2f %8.1f %8d %8.2f %6s %9d %8.2f %8.2f %6.1f %6.1f\n", t, r, w, (w > 0) ? b / w / 1e6 : 0, m / 1024, c, g, rp, (w1 > 0) ? w / w1 : 0, (m1 > 0) ? m / m1 : 0, (w > 0) ? cw / w / 1e4 : 0, (w > 0) ? iw / w / 1e4 : 0}'
  done
done
if [ -n "${SRV:-}" ]; then
  tck=$(getconf CLK_TCK)
  for r in $(seq 1 "$ROUNDS"); do
    read -r ticks hwm <"$W/server.$r"
    awk -v r="$r" -v c="$ticks" -v t="$tck" -v m="$hwm" 'BEGIN{printf "server round %d: %.2f CPU s, peak RSS so far %d MB\n", r, c / t, m / 1024}'
  done
fi
