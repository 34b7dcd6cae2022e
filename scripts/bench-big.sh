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
#
# Each round: scripts/mktree -big writes the data (seed = the round), sync,
# then each tool backs it up. Output per tool and round: wall seconds, MB/s
# of data read, peak RSS (/usr/bin/time), CPU seconds, Coffer's garbage
# collections, the repository's size after it, and each round's time and
# RSS against the first round's.
set -euo pipefail
COFFER=$(readlink -f "${1:?usage: bench-big.sh COFFER_BINARY}")
GB=${GB:-12}
FILES=${FILES:-$GB}
ROUNDS=${ROUNDS:-2}
SETTLE=${SETTLE:-30}
HERE=$(cd "$(dirname "$0")" && pwd)
PATH=$PATH:/tmp/peers/bin
RESTIC=${RESTIC:-$(command -v restic || true)}
KOPIA=${KOPIA:-$(command -v kopia || true)}
TOOLS_WANTED=${TOOLS:-coffer}
TOOLS=()
for t in $TOOLS_WANTED; do
  case $t in
    coffer) TOOLS+=(coffer) ;;
    restic) if [ -n "$RESTIC" ] && [ -x "$RESTIC" ]; then TOOLS+=(restic); else echo "skipping restic: not found" >&2; fi ;;
    kopia) if [ -n "$KOPIA" ] && [ -x "$KOPIA" ]; then TOOLS+=(kopia); else echo "skipping kopia: not found" >&2; fi ;;
    *) echo "unknown tool $t" >&2; exit 2 ;;
  esac
done
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (Debian: apt-get install time)" >&2; exit 1; }
[ $((GB * 1000 % FILES)) -eq 0 ] || { echo "GB x 1000 must be a multiple of FILES" >&2; exit 2; }

if [ -n "${WORK:-}" ]; then W=$WORK; mkdir -p "$W"; else W=$(mktemp -d /tmp/coffer-bench-big.XXXX); fi
W=$(readlink -f "$W")
cleanup() { [ -n "${KEEP:-}" ] || rm -rf "$W"; }
trap cleanup EXIT
DATA=$W/data
BYTES=$((GB * 1000000000))
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$W/restic-cache KOPIA_PASSWORD=bench KOPIA_CHECK_FOR_UPDATES=false
export COFFER_HOME=$W/c-home
KFLAGS=(--config-file="$W/k-cfg/repository.config" --log-dir="$W/k-cfg/logs")
kopia_run() { "$KOPIA" "$@" "${KFLAGS[@]}"; }

# timed NAME ROUND CMD...: writes "wall rss_kb cpu_s gcs" to $W/NAME.ROUND.
timed() {
  local name=$1 round=$2; shift 2
  local gcs=-
  if [ "$name" = coffer ]; then
    GODEBUG=gctrace=1 /usr/bin/time -f "%e %M %U %S" -o "$W/t" "$@" >"$W/log" 2>&1 \
      || { echo "$name round $round FAILED: $(grep -v '^gc ' "$W/log" | tail -3)" >&2; exit 1; }
    gcs=$(grep -c '^gc ' "$W/log" || true)
  else
    /usr/bin/time -f "%e %M %U %S" -o "$W/t" "$@" >"$W/log" 2>&1 \
      || { echo "$name round $round FAILED: $(tail -3 "$W/log")" >&2; exit 1; }
  fi
  awk -v g="$gcs" '{printf "%s %s %.2f %s\n", $1, $2, $3 + $4, g}' "$W/t" >"$W/$name.$round"
}
repo() { case $1 in coffer) echo "$COFFER_HOME" ;; *) echo "$W/r-$1" ;; esac; }

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
echo "$ROUNDS rounds of $GB GB in $FILES files; tools: ${TOOLS[*]}" >&2
for r in $(seq 1 "$ROUNDS"); do
  "$W/mktree" -big "$FILES" -size $((BYTES / FILES)) -seed "$r" "$DATA" >&2
  sync; sleep "$SETTLE"
  for t in "${TOOLS[@]}"; do
    echo "  round $r $t, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    case $t in
      coffer) timed coffer "$r" "$COFFER" backup "$DATA" ;;
      restic) timed restic "$r" "$RESTIC" -r "$W/r-restic" backup "$DATA" ;;
      kopia) timed kopia "$r" "$KOPIA" snapshot create "$DATA" "${KFLAGS[@]}" ;;
    esac
    echo "$(du -sm "$(repo "$t")" | cut -f1)" >"$W/$t.$r.repo"
    echo "    $(cat "$W/$t.$r") repo $(cat "$W/$t.$r.repo") MB" >&2
  done
done

echo
echo "$ROUNDS x $GB GB ($FILES files a round); $(nproc) cores, load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-7s %5s %9s %8s %8s %8s %6s %9s %8s %8s\n' tool round wall_s MB/s rss_MB cpu_s GCs repo_MB time/r1 rss/r1
for t in "${TOOLS[@]}"; do
  read -r w1 m1 _ _ <"$W/$t.1"
  for r in $(seq 1 "$ROUNDS"); do
    read -r wall rss cpu gcs <"$W/$t.$r"
    awk -v t="$t" -v r="$r" -v w="$wall" -v m="$rss" -v c="$cpu" -v g="$gcs" -v b="$BYTES" \
      -v rp="$(cat "$W/$t.$r.repo")" -v w1="$w1" -v m1="$m1" \
      'BEGIN{printf "%-7s %5d %9.2f %8.1f %8d %8.2f %6s %9d %8.2f %8.2f\n", t, r, w, (w > 0) ? b / w / 1e6 : 0, m / 1024, c, g, rp, (w1 > 0) ? w / w1 : 0, (m1 > 0) ? m / m1 : 0}'
  done
done
