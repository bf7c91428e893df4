"""Docker's errors in the project's terms, translated once at this boundary, and the engine connection.

Only `runtime/` imports docker; every Docker call runs inside `translate_errors` so callers see `NotFound`,
`Conflict`, `InvalidInput` or `RuntimeUnavailable` with a message that says what to do next.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import docker
import docker.errors
import requests

from gastown_mcp.errors import Conflict, InvalidInput, NotFound, RuntimeUnavailable

START_HINT = "start it with `sudo bash scripts/install-docker.sh`"


@contextlib.contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Turn docker and connection errors raised while doing `action` into project errors, once."""
    try:
        yield
    except docker.errors.ImageNotFound as exc:
        raise NotFound(f"{action}: image not found ({exc.explanation}); build it with `gastown image build`") from exc
    except docker.errors.NotFound as exc:
        raise NotFound(f"{action}: {exc.explanation}") from exc
    except docker.errors.APIError as exc:
        if exc.status_code == 409:
            raise Conflict(f"{action}: {exc.explanation}") from exc
        if exc.status_code is not None and 400 <= exc.status_code < 500:
            raise InvalidInput(f"{action}: {exc.explanation}") from exc
        raise RuntimeUnavailable(f"{action}: the Docker engine failed: {exc.explanation}") from exc
    except (docker.errors.DockerException, requests.exceptions.ConnectionError) as exc:
        raise RuntimeUnavailable(f"Docker is not running: {START_HINT} ({action}: {exc})") from exc


def connect(timeout_s: float = 30) -> docker.DockerClient:
    """A client for the local engine, or `RuntimeUnavailable` saying how to start it."""
    with translate_errors("connecting to Docker"):
        client = docker.from_env(timeout=int(timeout_s))
        client.ping()
        return client
