#!/bin/sh
# Default agent command: Claude Code headless, talking to the town over MCP HTTP with the agent's token.
# Arguments go to Claude Code as well (the mayor's command passes `--tools "" --system-prompt ...`: the town's
# tools only). Without any, the agent gets the built-in tools a polecat works with; Claude Code's others
# (sub-agents, cron, worktrees, monitors ...) would cost ~14k tokens a request and have no use here.
# Inputs (environment, set by the runtime): GASTOWN_AGENT, GASTOWN_ROLE, GASTOWN_MCP_URL, GASTOWN_TOKEN,
# GASTOWN_BEAD (optional), GASTOWN_TASK (optional: the first prompt of an agent with no bead), GASTOWN_MAX_TURNS (optional), GASTOWN_SESSION_ID (the session id the town records;
# made up here when missing). To continue an ended session: GASTOWN_RESUME (its id) and GASTOWN_PROMPT (the
# next prompt, e.g. a nudge); ~/.claude is a host directory, so a session outlives its container. A session
# that never had a turn (GASTOWN_WAIT: an agent started with nothing to do, which ends here without a model
# call) starts under that id when it is first resumed.
# The model endpoint comes from ANTHROPIC_BASE_URL (the town's gateway) with the agent's virtual key in
# ANTHROPIC_AUTH_TOKEN; no provider key is ever here. GASTOWN_OPT (default /opt/gastown) holds prompts/ and
# settings.json.
set -eu

opt="${GASTOWN_OPT:-/opt/gastown}"
role="${GASTOWN_ROLE:-polecat}"
prompt_file="$opt/prompts/${role}.md"
[ -f "$prompt_file" ] || prompt_file="$opt/prompts/polecat.md"
mcp_config="$HOME/mcp.json"
umask 077
printf '{"mcpServers":{"gastown":{"type":"http","url":"%s","headers":{"Authorization":"Bearer %s"}}}}\n' \
  "${GASTOWN_MCP_URL:?GASTOWN_MCP_URL is not set}" "${GASTOWN_TOKEN:?GASTOWN_TOKEN is not set}" > "$mcp_config"

if [ -n "${GASTOWN_BEAD:-}" ]; then
  task="You are ${GASTOWN_AGENT:-an agent}. Work bead ${GASTOWN_BEAD}: claim it, do it in /work, commit, complete it."
else
  task="${GASTOWN_TASK:-You are ${GASTOWN_AGENT:-an agent}. Check your hook and inbox with the town tools and work what is there.}"
fi

[ "$#" -gt 0 ] || set -- --tools "Bash,Edit,Write,Read,Glob,Grep"
if [ -n "${GASTOWN_RESUME:-}" ]; then
  : "${GASTOWN_PROMPT:?GASTOWN_PROMPT is needed with GASTOWN_RESUME}"
  if [ -n "$(find "$HOME/.claude/projects" -name "$GASTOWN_RESUME.jsonl" 2>/dev/null | head -n 1)" ]; then
    set -- "$@" --resume "$GASTOWN_RESUME" -p "$GASTOWN_PROMPT"
  else
    set -- "$@" --session-id "$GASTOWN_RESUME" -p "$GASTOWN_PROMPT"  # its first turn
  fi
elif [ -n "${GASTOWN_WAIT:-}" ]; then
  echo "${GASTOWN_AGENT:-agent}: nothing to do yet; the town resumes this session with its first nudge"
  exit 0
else
  session="${GASTOWN_SESSION_ID:-$(cat /proc/sys/kernel/random/uuid)}"
  set -- "$@" --session-id "$session" -p "$task"
fi

# settings.json also makes Claude Code wait for the town's MCP server before its first turn: in -p mode it
# otherwise connects in the background, and a first turn sent too early has no town tools at all.
exec claude \
  --output-format stream-json --verbose \
  --mcp-config "$mcp_config" --strict-mcp-config \
  --settings "$opt/settings.json" \
  --append-system-prompt "$(cat "$prompt_file")" \
  --max-turns "${GASTOWN_MAX_TURNS:-200}" \
  "$@"
