"""Run every benchmark in bench/ (one command) and print their figures.

    python bench/run.py            # all
    python bench/run.py runner     # only bench_runner.py (substring match)

Each benchmark measures its baseline in the same process and prints ratios; the machines are
shared and noisy, so ratios, not absolute times, are what to compare across runs.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    wanted = sys.argv[1:]
    scripts = sorted(p for p in HERE.glob("bench_*.py") if not wanted or any(w in p.name for w in wanted))
    failed = 0
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call([sys.executable, "-W", "ignore", str(script)])
        print(f"--- {script.name}: exit {code} in {time.perf_counter() - t0:.0f}s", flush=True)
        failed += code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
