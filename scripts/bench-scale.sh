#!/usr/bin/env bash
# Many small files: Coffer against restic (and kopia if present) on a tree of
# DIRS directories of FILES_PER_DIR files, 100 B-8 KB of random bytes each
# (1,000 x 1,000 by default: 1 M files, 4.1 GB), with the file system's own
# floor (cp -a, tar c | tar x, a walk that stats every file) beside them.
# Usage: scripts/bench-scale.sh COFFER_BINARY
#
# Environment:
#   DIRS, FILES_PER_DIR  the tree's shape (default 1000 x 1000); 100 x 1000 runs in minutes
#   RESTIC, KOPIA        the peers' binaries (default: restic, kopia on PATH or in
#                        /tmp/peers/bin); a missing peer is skipped with a message
#   TOOLS                the tools and their order (default "coffer restic kopia")
#   WORK                 the working directory (default a new /tmp/coffer-bench-scale.XXXX,
#                        removed at the end); it needs about 4 x the tree's size free
#                        and 1 x more for each tool (its repository and its restore)
#   TREE                 an existing tree written by scripts/mktree with the same DIRS
#                        and FILES_PER_DIR, used instead of writing one (and rewritten
#                        in 1 % of its files by the run, so use it once)
#   FLOORS               the file-system floors to time (default "walk cp tar")
#   SETTLE               seconds to wait after writing the tree (default 30)
#
# Nothing is deleted during the run: every copy and restore goes into a
# directory of its own. Deleting a large tree costs minutes on this
# machine, and ext4 skips inodes freed moments ago when it allocates, which
# would charge one tool for another's deletion (docs/performance.md).
#
# Phases, each run for every tool in turn on the same tree: first backup into
# an empty repository, unchanged re-run, re-run after rewriting 1 % of the
# files (scripts/mktree -rewrite 1), listing snapshots, and restore of the
# latest snapshot into an empty directory. Each tool keeps its default cache
# (restic's and kopia's in WORK, coffer's COFFER_HOME). Nothing is dropped
# from the page cache: the tree is read once before the first timed step.
#
# Output: per tool and phase the wall seconds, peak RSS (MB, /usr/bin/time's
# maximum resident set), CPU seconds (user+sys) and, for coffer, the number
# of garbage collections (GODEBUG=gctrace=1); then coffer / each peer and
# coffer / the fastest peer per phase, and coffer against the file-system
# floor. The machine being shared, quote the ratios of one run, not seconds.
set -euo pipefail
COFFER=$(readlink -f "${1:?usage: bench-scale.sh COFFER_BINARY}")
DIRS=${DIRS:-1000}
FILES_PER_DIR=${FILES_PER_DIR:-1000}
SETTLE=${SETTLE:-30}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib/timed.sh"
pick_tools "coffer restic kopia"
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (Debian: apt-get install time)" >&2; exit 1; }

if [ -n "${WORK:-}" ]; then W=$WORK; mkdir -p "$W"; else W=$(mktemp -d /tmp/coffer-bench-scale.XXXX); fi
W=$(readlink -f "$W")
cleanup() { [ -n "${KEEP:-}" ] || rm -rf "$W"; }
trap cleanup EXIT
if [ -n "${TREE:-}" ]; then
  TREE=$(readlink -f "$TREE"); OWN_TREE=
  [ "$(find "$TREE" -mindepth 1 -maxdepth 1 -type d | wc -l)" -eq "$DIRS" ] || { echo "$TREE: not a tree of $DIRS directories" >&2; exit 2; }
else
  TREE=$W/tree; OWN_TREE=1
fi
FLOORS=${FLOORS:-walk cp tar}
NFILES=$((DIRS * FILES_PER_DIR))
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$W/restic-cache KOPIA_PASSWORD=bench KOPIA_CHECK_FOR_UPDATES=false
export COFFER_HOME=$W/c-home
KFLAGS=(--config-file="$W/k-cfg/repository.config" --log-dir="$W/k-cfg/logs")

# timed NAME PHASE CMD...: writes "wall rss_kb cpu_s gcs" to $W/NAME.PHASE.
count() { find "$1" -type f | wc -l; }

echo "tree: $DIRS x $FILES_PER_DIR files in $TREE; tools: ${TOOLS[*]}" >&2
(cd "$HERE" && go build -o "$W/mktree" ./mktree)   # inside the module, from any directory
if [ -n "$OWN_TREE" ]; then
  "$W/mktree" -dirs "$DIRS" -files "$FILES_PER_DIR" "$TREE" >&2
  sync; sleep "$SETTLE"
fi
TREE_BYTES=$(du -sb "$TREE" | cut -f1)
find "$TREE" -type f -exec cat {} + >/dev/null   # warm the page cache

echo "file-system floor: $FLOORS, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for f in $FLOORS; do
  case $f in
    walk) timed floor walk find "$TREE" -printf '%s\n' -o -true ;;
    cp) timed floor cp cp -a "$TREE" "$W/floor-cp" ;;
    tar) mkdir "$W/floor-tar"
      timed floor tar bash -c 'tar -C "$1" -cf - . | tar -C "$2" -xf -' tar "$TREE" "$W/floor-tar" ;;
    *) echo "unknown floor $f" >&2; exit 2 ;;
  esac
done

snapshot_id=
# kopia_run: kopia with this run's configuration (timed runs name "$KOPIA" itself: /usr/bin/time runs no shell function)
kopia_run() { "$KOPIA" "$@" "${KFLAGS[@]}"; }
backup() { # tool phase
  case $1 in
    coffer) timed coffer "$2" "$COFFER" backup "$TREE" ;;
    restic) timed restic "$2" "$RESTIC" -r "$W/r-restic" backup "$TREE" ;;
    kopia) timed kopia "$2" "$KOPIA" snapshot create "$TREE" "${KFLAGS[@]}"
      snapshot_id=$(sed -n 's/.*Created snapshot with root .* and ID \([0-9a-f]*\).*/\1/p' "$W/log" | tail -1) ;;
  esac
}
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

echo "first backup and unchanged re-run, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for t in "${TOOLS[@]}"; do backup "$t" backup; backup "$t" rerun; done
echo "rewriting 1 % of the files, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$W/mktree" -dirs "$DIRS" -files "$FILES_PER_DIR" -rewrite 1 "$TREE" >&2
for t in "${TOOLS[@]}"; do backup "$t" changed; done

echo "snapshots, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for t in "${TOOLS[@]}"; do
  case $t in
    coffer) timed coffer snapshots "$COFFER" snapshots ;;
    restic) timed restic snapshots "$RESTIC" -r "$W/r-restic" snapshots ;;
    kopia) timed kopia snapshots "$KOPIA" snapshot list "$TREE" "${KFLAGS[@]}" ;;
  esac
done
if [[ " ${TOOLS[*]} " == *" kopia "* ]] && [ -z "$snapshot_id" ]; then echo "kopia: no snapshot ID in its output" >&2; exit 1; fi

echo "restore, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for t in "${TOOLS[@]}"; do
  case $t in
    coffer) timed coffer restore "$COFFER" restore latest --target "$W/out-$t" ;;
    restic) timed restic restore "$RESTIC" -r "$W/r-restic" restore latest --target "$W/out-$t" ;;
    kopia) timed kopia restore "$KOPIA" snapshot restore "$snapshot_id" "$W/out-$t" "${KFLAGS[@]}" ;;
  esac
  n=$(count "$W/out-$t")
  [ "$n" -eq "$NFILES" ] || echo "warning: $t restored $n files, the tree has $NFILES" >&2
done

echo
echo "$DIRS x $FILES_PER_DIR = $NFILES files, $TREE_BYTES bytes; $(nproc) cores, load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-7s %-10s %9s %9s %8s %6s\n' tool phase wall_s rss_MB cpu_s GCs
for t in floor "${TOOLS[@]}"; do
  for p in walk cp tar backup rerun changed snapshots restore; do
    [ -s "$W/$t.$p" ] || continue
    read -r wall rss cpu gcs <"$W/$t.$p"
    printf '%-7s %-10s %9s %9d %8s %6s\n' "$t" "$p" "$wall" $((rss / 1024)) "$cpu" "$gcs"
  done
done
for t in "${TOOLS[@]}"; do
  case $t in coffer) d=$COFFER_HOME ;; *) d=$W/r-$t ;; esac
  echo "$t repository: $(du -sm "$d" | cut -f1) MB"
done
echo
for p in backup rerun changed snapshots restore; do
  line="ratio $p:"; best=; bt=
  for t in "${TOOLS[@]}"; do
    [ "$t" = coffer ] && continue
    tt=$(cut -d' ' -f1 "$W/$t.$p")
    line="$line coffer/$t $(awk -v a="$(cut -d' ' -f1 "$W/coffer.$p")" -v b="$tt" 'BEGIN{printf (b > 0) ? "%.2f" : "n/a", a / b}')"
    if [ -z "$bt" ] || awk -v a="$tt" -v b="$bt" 'BEGIN{exit !(a < b)}'; then best=$t; bt=$tt; fi
  done
  [ -n "$best" ] && line="$line | coffer/fastest ($best) $(awk -v a="$(cut -d' ' -f1 "$W/coffer.$p")" -v b="$bt" 'BEGIN{printf (b > 0) ? "%.2f" : "n/a", a / b}')"
  echo "$line"
done
fl() { [ -s "$W/floor.$1" ] && cut -d' ' -f1 "$W/floor.$1" || echo 0; }
awk -v r="$(cut -d' ' -f1 "$W/coffer.restore")" -v c="$(fl cp)" -v x="$(fl tar)" \
  -v b="$(cut -d' ' -f1 "$W/coffer.backup")" -v u="$(cut -d' ' -f1 "$W/coffer.rerun")" -v w="$(fl walk)" \
  'function q(a, b) { return (b > 0) ? sprintf("%.2f", a / b) : "n/a" }
   BEGIN{printf "floor: coffer restore/cp -a %s, restore/tar x %s; first backup/cp -a %s; unchanged re-run/walk %s\n", q(r, c), q(r, x), q(b, c), q(u, w)}'
