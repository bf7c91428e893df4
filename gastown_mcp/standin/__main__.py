"""`python -m gastown_mcp.standin --port P --script polecat`: serve the scripted stand-in with uvicorn.

Prints one line with its URL once listening; GET /_standin/requests shows what it was sent.
"""

from __future__ import annotations

import argparse
import sys

import uvicorn

from gastown_mcp.standin.app import build_standin
from gastown_mcp.standin.scripts import script_named


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gastown_mcp.standin", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--script", default="hello", help="hello, echo, polecat or error:<status>")
    parser.add_argument("--expect-key", default=None, help="refuse requests whose API key differs (401)")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    try:
        script = script_named(args.script)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    standin = build_standin(script, expected_key=args.expect_key)
    print(f"scripted stand-in ({args.script}) on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(standin.app, host=args.host, port=args.port, log_level=args.log_level, server_header=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
