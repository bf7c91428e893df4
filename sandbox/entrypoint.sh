#!/bin/sh
# Agent container entrypoint (PID 1 is docker's init). Enforces the wall-clock limit with `timeout`
# (exit 124 when it fires) and runs the given command, or Claude Code headless by default.
#
# A command killed by the kernel's OOM killer exits 251 here (with a line on stderr), read from the
# container's own memory cgroup. Docker's OOMKilled flag alone misses some of these kills on cgroup v2
# (the container is gone before its OOM event is read), and an out-of-memory bead must not look like a crash.
set -eu

OOM_EXIT=251
limit="${GASTOWN_WALLCLOCK_SECONDS:-0}"
if [ "$#" -eq 0 ]; then
  set -- /opt/gastown/run-claude.sh
fi
if [ "$limit" -gt 0 ] 2>/dev/null; then
  set -- timeout --kill-after=5 "$limit" "$@"
fi

oom_kills() {
  for events in /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control; do
    [ -r "$events" ] || continue
    while read -r key value; do
      if [ "$key" = oom_kill ]; then
        echo "$value"
        return
      fi
    done <"$events"
  done
  echo 0
}

# Docker signals PID 1, which signals this shell: pass each signal on (TERM from `docker stop` so the command
# can shut down cleanly, ALRM from the host's wall-clock enforcement so `timeout` ends it with 124). The traps
# go in before the command starts: a signal in between would otherwise end this shell with 128+signal.
child=""
for sig in TERM INT HUP ALRM USR1 USR2; do
  trap "[ -n \"\$child\" ] && kill -$sig \"\$child\" 2>/dev/null || true" "$sig"
done
"$@" &
child=$!
status=0
wait "$child" || status=$?
while kill -0 "$child" 2>/dev/null; do # a trapped signal ended the wait, not the command
  status=0
  wait "$child" || status=$?
done
if [ "$status" -eq 137 ] && [ "$(oom_kills)" -gt 0 ]; then
  echo "gastown: killed by the kernel for going over the container's memory limit" >&2
  exit "$OOM_EXIT"
fi
exit "$status"
