"""Bytes per call: where a 16-token answer's bytes go in ``llmlab.db`` and in the collector.

Runs a sweep of ``--calls`` calls against ``bench/fastserver.py`` (16 streamed tokens plus usage)
with export to the embedded collector on, then reports the page bytes of every table and index
(SQLite's ``dbstat``) and the payload bytes of every column of ``spans``, ``calls`` and ``cache``,
per call, for the store and for the collector's database.

    python bench/bench_storage.py [--calls 500]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_runner as br


def tables(db: sqlite3.Connection, calls: int) -> dict[str, float]:
    """Page bytes per call of every table and index (after a VACUUM, so free pages do not count)."""
    rows = db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall()
    return {name: size / calls for name, size in rows}


def columns(db: sqlite3.Connection, table: str, calls: int) -> dict[str, float]:
    names = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
    sums = db.execute(f"SELECT {', '.join(f'coalesce(sum(length({json.dumps(n)})), 0)' for n in names)} FROM {table}")
    return {n: s / calls for n, s in zip(names, sums.fetchone()) if s}


def measure(path: Path, calls: int) -> dict:
    db = sqlite3.connect(path)
    db.execute("VACUUM")
    # pages in use (the WAL counts: the file on disk may not have been checkpointed yet)
    size = db.execute("PRAGMA page_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0]
    out = {"file_bytes_per_call": size / calls, "tables": tables(db, calls)}
    for table in ("spans", "calls", "cache"):
        if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone():
            out[f"columns.{table}"] = columns(db, table, calls)
    db.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    import llmlab as ll
    from llmlab.tracing import flush

    port, cport = br._free_port(), br._free_port()
    chome = Path(tempfile.mkdtemp(prefix="llmlab-bench-collector-"))
    procs = [
        br._start([str(br.HERE / "fastserver.py"), "--port", str(port)], f"http://127.0.0.1:{port}/v1/models"),
        br._start(
            ["-m", "llmlab", "collector", "--port", str(cport), "--home", str(chome)],
            f"http://127.0.0.1:{cport}/v1/ping",
        ),
    ]
    try:
        home = Path(tempfile.mkdtemp(prefix="llmlab-bench-"))
        ll.configure(home=home, datakit=f"http://127.0.0.1:{cport}")
        ll.provider("bench", base_url=f"http://127.0.0.1:{port}/v1", api_key_env=None)
        sweep = ll.Sweep(prompts=br._prompts(args.calls), models=["bench/tiny"], temperature=0.5, max_tokens=br.TOKENS)
        res = sweep.run(concurrency=32, display=False)
        assert (res.df["status"] == "ok").all()
        flush()
        from llmlab.tracing.export import pending

        for _ in range(200):  # until the outbox has delivered everything
            if pending() == 0:
                break
            time.sleep(0.1)
        report = {"store": measure(home / "llmlab.db", args.calls)}
        collector_db = next(chome.rglob("*.db"))
        report["collector"] = measure(collector_db, args.calls)
    finally:
        for proc in procs:
            proc.terminate()
    for side, data in report.items():
        print(f"== {side}: {data['file_bytes_per_call']:.0f} bytes per call (database pages, after VACUUM)")
        for key, sizes in data.items():
            if isinstance(sizes, dict):
                print(f"  {key}: " + ", ".join(f"{k} {v:.0f}" for k, v in sizes.items() if v >= 8))
    print(json.dumps({side: round(d["file_bytes_per_call"]) for side, d in report.items()}))


if __name__ == "__main__":
    main()
