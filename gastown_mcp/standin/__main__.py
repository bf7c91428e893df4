"""`python -m gastown_mcp.standin --port P --script polecat`: serve the scripted stand-in with uvicorn.

Prints one line with its URL once listening (the socket is bound first, so `--port 0` prints the port it got);
GET /_standin/requests shows what it was sent.
"""

from __future__ import annotations

import argparse
import sys

from gastown_mcp import serving
from gastown_mcp.standin.app import build_standin
from gastown_mcp.standin.scripts import script_named


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gastown_mcp.standin", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8799, help="0 picks a free port")
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
    sock = serving.bind(args.host, args.port)
    print(f"scripted stand-in ({args.script}) on {serving.url_of(sock)}", flush=True)
    try:
        serving.make_server(standin.app, log_level=args.log_level).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
