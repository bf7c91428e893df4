"""The one exception tree of gastown_mcp. Every message says what to do next.

GastownError
├── NotFound             an id or name that does not exist
├── Conflict             someone else holds it, or it already exists
├── Forbidden            the caller's role or ownership does not allow it
├── InvalidInput         a value out of range or malformed
├── InvalidTransition    a bead or agent state change the lifecycle does not allow
├── BudgetExceeded       a token or USD budget is spent
├── Unauthorized         no or bad credentials
├── StoreError           the database cannot be used (locked, corrupt, missing)
└── RuntimeUnavailable   the container engine cannot be used
"""

from __future__ import annotations


class GastownError(Exception):
    """Base of every error the project raises on purpose."""

    exit_code = 1


class NotFound(GastownError):
    exit_code = 3


class Conflict(GastownError):
    exit_code = 4


class Forbidden(GastownError):
    exit_code = 5


class InvalidInput(GastownError):
    exit_code = 2


class InvalidTransition(GastownError):
    exit_code = 4


class BudgetExceeded(GastownError):
    exit_code = 6


class BudgetBusy(BudgetExceeded):
    """A budget is not spent yet, but in-flight requests have reserved the rest; retry in a moment."""


class Unauthorized(GastownError):
    exit_code = 5


class StoreError(GastownError):
    exit_code = 7


class RuntimeUnavailable(GastownError):
    exit_code = 8
