# Shared by the bench-*.sh scripts; source it after setting W, the working
# directory.
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
