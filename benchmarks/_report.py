"""How every benchmark saves its figures: `benchmarks/results/<file>.json`, with the command and the machine."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def write_report(benchmark: str, results: Any, *, file: str | None = None, **extra: Any) -> Path:
    """Write the report (extra keys go before the results), print where, and return the path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{file or benchmark}.json"
    report = {
        "benchmark": benchmark,
        "command": " ".join([".venv/bin/python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "machine": {
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        **extra,
        "results": results,
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return path
