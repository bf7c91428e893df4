"""The operator's window: a live web dashboard served by `gastown up` (its own port, loopback by default).

Operator-only (a login with the operator's token, a session cookie, CSRF on every action); it reads and acts
only through `Town` as the operator. Plain HTML drawn on the server, one small script and stylesheet shipped
here, a live feed woken by the journal (server-sent events), and `/metrics` for Prometheus.
"""

from gastown_mcp.dashboard.app import build_dashboard

__all__ = ["build_dashboard"]
