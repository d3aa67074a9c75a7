"""
What every bench script does with its figures: one latency summary, and the
table and JSON it leaves (so that all of them round and write alike).
"""

from __future__ import annotations

import json
import os


def summary(latencies: list[float]) -> dict:
    """Milliseconds: median, p95, p99, max of C{latencies} (seconds)."""
    if not latencies:
        return {"count": 0, "median_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    s = sorted(latencies)

    def pct(p):
        return round(s[min(len(s) - 1, int(p * len(s)))] * 1000, 3)

    return {
        "count": len(s),
        "median_ms": pct(0.5),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": round(s[-1] * 1000, 3),
    }


def save(result: dict, table: str, path: str) -> None:
    """Print C{table}, keep it in C{result} and write C{result} as JSON to C{path}."""
    result["table"] = table
    print(table)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nJSON: {path}")
