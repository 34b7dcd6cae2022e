# Shared by the bench-*.sh scripts; timed needs W, the working directory,
# set before it is called.
#
# timed NAME STEP CMD...: runs CMD under /usr/bin/time, its output in
# $W/log, and writes "wall_s rss_kb cpu_s gcs" to $W/NAME.STEP and the
# same line, labelled, to stderr. For NAME coffer it runs with
# GODEBUG=gctrace=1 and gcs counts the garbage collections; for other
# tools gcs is "-". If CMD fails it prints the log's last lines and exits.
timed() {
  local name=$1 step=$2; shift 2
  local gcs=-
  if [ "$name" = coffer ]; then
    GODEBUG=gctrace=1 /usr/bin/time -f "%e %M %U %S" -o "$W/t" "$@" >"$W/log" 2>&1 \
      || { echo "$name $step FAILED: $(grep -v '^gc ' "$W/log" | tail -3)" >&2; exit 1; }
    gcs=$(grep -c '^gc ' "$W/log" || true)
  else
    /usr/bin/time -f "%e %M %U %S" -o "$W/t" "$@" >"$W/log" 2>&1 \
      || { echo "$name $step FAILED: $(tail -3 "$W/log")" >&2; exit 1; }
  fi
  awk -v g="$gcs" '{printf "%s %s %.2f %s\n", $1, $2, $3 + $4, g}' "$W/t" >"$W/$name.$step"
  printf '  %-7s %-8s %s\n' "$name" "$step" "$(cat "$W/$name.$step")" >&2
}

# machine: the load averages and the kernel's CPU pressure (the share of
# time runnable tasks waited for a core, over 10 and 60 s), one line.
machine() {
  echo "load $(cut -d' ' -f1-3 /proc/loadavg); cpu pressure $(awk '/^some/{print $2, $3}' /proc/pressure/cpu 2>/dev/null || echo unknown)"
}

# pick_tools DEFAULT: sets TOOLS (an array) from $TOOLS or DEFAULT, keeping
# coffer and the peers found ($RESTIC, $KOPIA, else on PATH or in
# /tmp/peers/bin) and saying which are skipped.
pick_tools() {
  PATH=$PATH:/tmp/peers/bin
  RESTIC=${RESTIC:-$(command -v restic || true)}
  KOPIA=${KOPIA:-$(command -v kopia || true)}
  local wanted=${TOOLS:-$1} t
  TOOLS=()
  for t in $wanted; do
    case $t in
      coffer) TOOLS+=(coffer) ;;
      restic) if [ -n "$RESTIC" ] && [ -x "$RESTIC" ]; then TOOLS+=(restic); else echo "skipping restic: not found (set RESTIC or PATH)" >&2; fi ;;
      kopia) if [ -n "$KOPIA" ] && [ -x "$KOPIA" ]; then TOOLS+=(kopia); else echo "skipping kopia: not found (set KOPIA or PATH, or put it in /tmp/peers/bin)" >&2; fi ;;
      *) echo "unknown tool $t" >&2; exit 2 ;;
    esac
  done
}
