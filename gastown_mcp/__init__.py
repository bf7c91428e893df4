"""gastown_mcp: a factory for fleets of AI coding agents.

Beads (units of work) live in one SQLite store; agents reach them through a role-scoped MCP server.
"""

__version__ = "0.1.0"
