#!/bin/sh
# Agent container entrypoint (PID 1 is docker's init). Enforces the wall-clock limit with `timeout`
# (exit 124 when it fires) and runs the given command, or Claude Code headless by default.
set -eu

limit="${GASTOWN_WALLCLOCK_SECONDS:-0}"
if [ "$#" -eq 0 ]; then
  set -- /opt/gastown/run-claude.sh
fi
if [ "$limit" -gt 0 ] 2>/dev/null; then
  exec timeout --kill-after=5 "$limit" "$@"
fi
exec "$@"
