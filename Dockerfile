# The gastown agent image: a non-root user, git, Python, Claude Code (native binary, no node), sandbox/ and the
# role prompts from gastown_mcp/prompts/ (the same files the MCP server serves).
# Build with `gastown image build` (it makes a local base from Debian packages when no registry is reachable):
#   DOCKER_BUILDKIT=0 docker build --build-arg BASE_IMAGE=gastown-base:bookworm -t gastown-agent:latest .
ARG BASE_IMAGE=python:3.12-slim

# Stage 1: fetch the Claude Code native binary from the npm registry with Python (the base has no node).
FROM ${BASE_IMAGE} AS claude
ARG CLAUDE_CODE_VERSION=2.1.332
ARG CLAUDE_CODE_INTEGRITY=sha512-f4JWhzwYutJIHScC7/dYOPX6s28tt7ZADhsOi8zwOHq5fFPEuUeChh2NMfinSg0GrUckYxaeebC4h0DqiKzLcw==
# Extra CA files (e.g. a TLS-intercepting proxy's) so the download verifies; only this stage needs them.
COPY sandbox/ca/ /usr/local/share/ca-certificates/gastown/
COPY sandbox/fetch_claude.py /tmp/fetch_claude.py
RUN update-ca-certificates >/dev/null 2>&1 || true; \
    python3 /tmp/fetch_claude.py "$CLAUDE_CODE_VERSION" "$CLAUDE_CODE_INTEGRITY" /opt/claude/claude

# Stage 2: the agent image.
FROM ${BASE_IMAGE}
# A dedicated high id that is no account on common hosts; `[runtime] agent_uid`/`agent_gid` pass other ones.
ARG AGENT_UID=61000
ARG AGENT_GID=61000
RUN command -v git >/dev/null || { apt-get update && apt-get install -y --no-install-recommends git \
      && rm -rf /var/lib/apt/lists/*; }; \
    groupadd --gid "$AGENT_GID" agent \
    && useradd --no-log-init --uid "$AGENT_UID" --gid "$AGENT_GID" --create-home --home-dir /home/agent --shell /bin/bash agent \
    && printf '[safe]\n\tdirectory = *\n[user]\n\tname = gastown agent\n\temail = agent@gastown.invalid\n' \
       > /etc/gitconfig
COPY --from=claude /opt/claude/claude /usr/local/bin/claude
COPY sandbox/ /opt/gastown/
COPY gastown_mcp/prompts/ /opt/gastown/prompts/
RUN rm -rf /opt/gastown/ca /opt/gastown/fetch_claude.py && chmod 0755 /opt/gastown/entrypoint.sh /opt/gastown/run-claude.sh
ENV HOME=/home/agent \
    IS_SANDBOX=1 \
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 \
    DISABLE_AUTOUPDATER=1 \
    ENABLE_TOOL_SEARCH=false \
    PYTHONDONTWRITEBYTECODE=1
USER ${AGENT_UID}:${AGENT_GID}
WORKDIR /work
ENTRYPOINT ["/opt/gastown/entrypoint.sh"]
