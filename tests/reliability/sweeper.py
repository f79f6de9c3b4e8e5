"""A sweep in its own process (``python tests/reliability/sweeper.py …``): the SIGKILL and
two-process tests run it so that killing it kills neither the model server nor the collector."""

from __future__ import annotations

import argparse
import json
import sys


def build(n: int, tag: str, max_tokens: int):
    import llmlab as ll

    prompts = [f"{tag}: tell me about the rain and the sun, number {i}" for i in range(n)]
    return ll.Sweep(prompts=prompts, models=["fault/tiny"], temperature=0.0, max_tokens=max_tokens, name=tag)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--datakit", default="none")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--tag", default="resume")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    import llmlab as ll

    ll.configure(home=args.home, datakit=args.datakit)
    ll.provider("fault", base_url=args.base_url, api_key_env=None)
    res = build(args.n, args.tag, args.max_tokens).run(display=False, concurrency=args.concurrency)
    from llmlab.tracing import flush

    flush()
    out = {
        "sweep_id": res.sweep_id,
        "ok": int((res.df["status"] == "ok").sum()),
        "rows": len(res.df),
        "cached": int(res.df["cached"].sum()),
    }
    print(json.dumps(out), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
