#!/bin/sh
# Agent container entrypoint (PID 1 is docker's init). Runs the given command, or Claude Code headless by
# default, and passes on every signal it gets. It enforces the wall-clock limit itself: at the deadline (its
# own timer, or SIGALRM from the host's wall-clock enforcement) the command gets TERM, KILL 5 s later, and
# the container exits 124.
#
# A command killed by the kernel's OOM killer exits 251 here (with a line on stderr), read from the
# container's own memory cgroup. Docker's OOMKilled flag alone misses some of these kills on cgroup v2
# (the container is gone before its OOM event is read), and an out-of-memory bead must not look like a crash.
#
# The command is this shell's own child, with nothing in between: with GNU `timeout` between them, a TERM
# from `docker stop` sometimes ended the command as if it had no handler for it (exit 143, its trap never
# ran), a few runs in a hundred on a loaded machine.
set -eu

OOM_EXIT=251
WALLCLOCK_EXIT=124
KILL_AFTER=5
limit="${GASTOWN_WALLCLOCK_SECONDS:-0}"
if [ "$#" -eq 0 ]; then
  set -- /opt/gastown/run-claude.sh
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
# can shut down cleanly). ALRM is the deadline. The traps go in before the command starts (a signal in between
# would otherwise end this shell with 128+signal), and a signal that comes before the command's pid is known
# is kept and passed on as soon as it is.
child=""
pending=""
timed_out=0
killer=""
timer=""
send() {
  kill -"$1" "$child" 2>/dev/null || true
  if [ "$timed_out" -eq 1 ] && [ -z "$killer" ]; then
    (sleep "$KILL_AFTER" && kill -KILL "$child" 2>/dev/null) &
    killer=$!
  fi
}
forward() {
  sig=$1
  if [ "$sig" = ALRM ]; then
    timed_out=1
    sig=TERM
  fi
  if [ -n "$child" ]; then
    send "$sig"
  else
    pending="$sig"
  fi
}
# The wall clock counts the time the container ran, in 1 s steps. While the town's emergency stop has it
# paused, a step stalls; one that took much longer than a second is counted as one second, so the frozen time
# is left out (a loaded machine's slow steps of up to 5 s still count in full).
wallclock() {
  used=0
  last=$(date +%s)
  while [ "$used" -lt "$1" ]; do
    sleep 1
    now=$(date +%s)
    step=$((now - last))
    last=$now
    if [ "$step" -gt 5 ]; then step=1; fi
    used=$((used + step))
  done
  kill -ALRM $$
}
for sig in TERM INT HUP ALRM USR1 USR2; do
  trap "forward $sig" "$sig"
done
"$@" &
child=$!
if [ "$limit" -gt 0 ] 2>/dev/null; then
  wallclock "$limit" &
  timer=$!
fi
if [ -n "$pending" ]; then
  send "$pending"
fi

# A trapped signal makes `wait` return 128+signal while the command still runs: wait again while it does.
# It may also end (and be reaped) just then, so a status above 128 is asked for once more at the end: the
# shell keeps an ended command's status and gives it to every later `wait` for that pid.
while :; do
  status=0
  wait "$child" || status=$?
  [ "$status" -gt 128 ] && kill -0 "$child" 2>/dev/null || break
done
if [ "$status" -gt 128 ]; then
  status=0
  wait "$child" || status=$?
fi
for helper in $timer $killer; do
  kill "$helper" 2>/dev/null || true
done
if [ "$status" -eq 137 ] && [ "$(oom_kills)" -gt 0 ]; then
  echo "gastown: killed by the kernel for going over the container's memory limit" >&2
  exit "$OOM_EXIT"
fi
if [ "$timed_out" -eq 1 ]; then
  echo "gastown: stopped at the container's wall-clock limit" >&2
  exit "$WALLCLOCK_EXIT"
fi
exit "$status"
