"""Download the Claude Code native binary from the npm registry and verify its integrity.

Runs inside the image build (stage `claude`), where neither node nor npm exists.
Usage: fetch_claude.py VERSION INTEGRITY DEST
"""

import base64
import hashlib
import io
import os
import sys
import tarfile
import urllib.request

PACKAGE = "@anthropic-ai/claude-code-linux-x64"


def main(version: str, integrity: str, dest: str) -> None:
    url = f"https://registry.npmjs.org/{PACKAGE}/-/claude-code-linux-x64-{version}.tgz"
    with urllib.request.urlopen(url, timeout=300) as response:
        data = response.read()
    algo, _, expected = integrity.partition("-")
    actual = base64.b64encode(hashlib.new(algo, data).digest()).decode()
    if actual != expected:
        sys.exit(f"integrity mismatch for {url}: got {algo}-{actual}")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.getmember("package/claude")
        source = tar.extractfile(member)
        assert source is not None
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest, "wb") as out:
            out.write(source.read())
        os.chmod(dest, 0o755)
    print(f"claude {version} -> {dest} ({len(data) // 1_000_000} MB download)")


if __name__ == "__main__":
    main(*sys.argv[1:4])
