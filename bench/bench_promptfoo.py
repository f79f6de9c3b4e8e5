"""Side by side with promptfoo on the same grid: N prompts × 1 model, temperature 0.5, 16 tokens.

promptfoo is installed only for this benchmark, in ``bench/promptfoo/`` (git-ignored, never a dependency):

    (cd bench/promptfoo && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install promptfoo@0.118.17)   # 0.123 needs Node >= 22.22
    python bench/bench_promptfoo.py [--calls 1000] [--rounds 3]

Each side runs as its own process end to end (``promptfoo eval`` / a Python script running ``ll.Sweep``) against
``bench/fastserver.py``, at concurrency 64, writing its results to its own store (promptfoo: its SQLite database
in a temp config dir, no cache; llmlab: its home, tracing on, no export, no cache). Start-up is cancelled out: each
side runs once with 8 calls and once with ``--calls``; throughput is ``(calls - 8) / (wall(calls) - wall(8))``.
promptfoo sends non-streamed requests (its default); llmlab streams and measures TTFT.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_runner as br

PF = br.HERE / "promptfoo" / "node_modules" / ".bin" / "promptfoo"
LLMLAB = """
import sys, tempfile, llmlab as ll
ll.configure(home=tempfile.mkdtemp(prefix="llmlab-bench-"), datakit=None)
ll.provider("bench", base_url=sys.argv[1], api_key_env=None)
prompts = [f"Question {i}: explain how rain forms over the sea." for i in range(int(sys.argv[2]))]
res = ll.Sweep(prompts=prompts, models=["bench/tiny"], temperature=0.5, max_tokens=16).run(
    concurrency=64, display=False, cache=False)
assert (res.df["status"] == "ok").all()
"""


def promptfoo(url: str, calls: int) -> float:
    folder = Path(tempfile.mkdtemp(prefix="promptfoo-bench-"))
    config = {
        "prompts": ["{{q}}"],
        "providers": [
            {
                "id": "openai:chat:tiny",
                "config": {"apiBaseUrl": url, "apiKey": "x", "temperature": 0.5, "max_tokens": 16},
            }
        ],
        "tests": [{"vars": {"q": f"Question {i}: explain how rain forms over the sea."}} for i in range(calls)],
    }
    (folder / "promptfooconfig.yaml").write_text(json.dumps(config))
    env = {
        **os.environ,
        "PROMPTFOO_DISABLE_TELEMETRY": "1",
        "PROMPTFOO_DISABLE_UPDATE": "1",
        "PROMPTFOO_CONFIG_DIR": str(folder / "home"),
        "OPENAI_API_KEY": "x",
    }
    cmd = [str(PF), "eval", "-c", str(folder / "promptfooconfig.yaml"), "--no-cache", "-j", "64"]
    cmd += ["--no-table", "--no-progress-bar", "-o", str(folder / "out.json")]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=False, capture_output=True, env=env, timeout=1800)
    wall = time.perf_counter() - t0
    out = json.loads((folder / "out.json").read_text())
    results = out["results"]["results"]
    ok = sum(1 for r in results if r.get("response") and not r.get("error"))
    assert ok == calls, f"promptfoo: {ok}/{calls} answered"
    return wall


def llmlab(url: str, calls: int) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-W", "ignore", "-c", LLMLAB, url, str(calls)], check=True, timeout=1800)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--servers", default="fast,realistic", help="fast: no delay; realistic: 0.2 s + 10 ms/token")
    args = parser.parse_args()
    if not PF.exists():
        sys.exit(f"promptfoo is not installed in {PF.parent.parent.parent} (see this file's docstring)")
    for name in args.servers.split(","):
        _compare(name, args.calls, args.rounds)


def _compare(server_name: str, calls: int, rounds: int) -> None:
    delays = {"fast": ["0", "0"], "realistic": ["200", "10"]}[server_name]
    port = br._free_port()
    server = br._start(
        [str(br.HERE / "fastserver.py"), "--port", str(port), "--tokens", str(br.TOKENS)]
        + ["--first-ms", delays[0], "--per-token-ms", delays[1]],
        f"http://127.0.0.1:{port}/v1/models",
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        cps: dict[str, list[float]] = {"promptfoo": [], "llmlab": []}
        for r in range(rounds):
            for name, side in (("promptfoo", promptfoo), ("llmlab", llmlab)):
                small, big = side(url, 8), side(url, calls)
                cps[name].append((calls - 8) / (big - small))
            print(
                f"[{server_name}] round {r + 1}: promptfoo {cps['promptfoo'][-1]:.0f}  "
                f"llmlab {cps['llmlab'][-1]:.0f} calls/s",
                flush=True,
            )
        ratio = statistics.median(b / a for a, b in zip(cps["promptfoo"], cps["llmlab"]))
        print(
            f"[{server_name}] {calls} calls, concurrency 64, {rounds} rounds (medians): promptfoo "
            f"{statistics.median(cps['promptfoo']):.0f}, llmlab {statistics.median(cps['llmlab']):.0f} calls/s; "
            f"llmlab/promptfoo {ratio:.2f}",
            flush=True,
        )
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
