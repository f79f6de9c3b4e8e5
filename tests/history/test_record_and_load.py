"""Every run is recorded as an experiment; ll.sweeps lists it; ll.load rebuilds the exact result
without sending anything; tags and notes persist; git and source are captured."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest

import llmlab as ll
from llmlab import history
from llmlab.run.retry import RetryPolicy
from llmlab.store import get_store


@pytest.fixture
def counted(counting_provider):
    """Provider 'counted': the embedded model behind a server that counts (and can fail) chat requests."""
    return counting_provider("counted")


def _prompts():
    return pd.DataFrame(
        {"id": ["q1", "q2", "q3"], "text": ["rainbows after rain", "how plants make food", "why the sky is blue"]}
    )


def test_load_returns_the_same_result_and_sends_nothing(counted):
    sweep = ll.Sweep(
        prompts=_prompts(),
        template="Explain briefly: {text}",
        system="Be short.",
        models=["counted/tiny"],
        temperature=[0.0, 0.7],
        max_tokens=10,
        seed=2,
        name="explain",
        params={"presence_penalty": [0.0, 0.5]},
    )
    res = sweep.run(display=False)
    sent = counted.requests
    assert sent == 12
    loaded = ll.load(res.sweep_id)
    assert counted.requests == sent  # nothing was sent
    assert isinstance(loaded, ll.SweepResult)
    pd.testing.assert_frame_equal(loaded.df, res.df)
    pd.testing.assert_frame_equal(loaded.skipped, res.skipped)
    assert loaded.stopped is None and loaded.spec == res.spec
    assert loaded.setting_columns() == res.setting_columns()
    pd.testing.assert_frame_equal(loaded.summary(), res.summary())
    fig = ll.charts.latency(loaded.df, by="temperature")  # charts work on a loaded result
    assert len(fig.data) >= 1
    # by unique prefix and by name (newest run) as well
    assert ll.load(res.sweep_id[:-2]).sweep_id == res.sweep_id
    assert ll.load("explain").sweep_id == res.sweep_id


def test_load_keeps_errors_and_skipped_calls():
    ll.provider("dead", base_url="http://127.0.0.1:9/v1", api_key_env=None)
    res = ll.Sweep(prompts=["hello", "bye"], models=["dead/tiny"], temperature=0.0, max_tokens=4).run(
        display=False, retry=RetryPolicy(max_attempts=1)
    )
    assert (res.df["status"] == "error").all()
    loaded = ll.load(res.sweep_id)
    pd.testing.assert_frame_equal(loaded.df, res.df)
    row = ll.sweeps().iloc[0]
    assert row["errors"] == 2 and row["ok"] == 0 and row["calls"] == 2

    budget = ll.Sweep(prompts=["a", "b", "c"], models=["local/tiny"], temperature=0.0, max_tokens=8)
    res2 = budget.run(display=False, budget_usd=1e-9, concurrency=1)
    loaded2 = ll.load(res2.sweep_id)
    assert res2.stopped == "budget" and len(res2.skipped) > 0
    assert loaded2.stopped == "budget"
    pd.testing.assert_frame_equal(loaded2.skipped, res2.skipped)
    pd.testing.assert_frame_equal(loaded2.df, res2.df)
    listed = ll.sweeps().set_index("sweep_id").loc[res2.sweep_id]
    assert listed["status"] == "budget" and listed["skipped"] == len(res2.skipped)


def test_experiment_metadata_is_recorded():
    res = ll.Sweep(
        prompts=["What is a rainbow?", "Why is the sky blue?"],
        models=["local/tiny", "local/small"],
        temperature=[0.0, 0.9],
        max_tokens=12,
        name="meta",
    ).run(display=False)
    res2 = ll.Sweep(
        prompts=["What is a rainbow?", "Why is the sky blue?"],
        models=["local/tiny"],
        temperature=[0.0],
        max_tokens=12,
        name="meta",
    ).run(display=False)
    df = ll.sweeps()
    assert df["sweep_id"].tolist()[:2] == [res2.sweep_id, res.sweep_id]  # newest first
    row = df.set_index("sweep_id").loc[res.sweep_id]
    assert row["name"] == "meta" and row["status"] == "finished"
    assert row["calls"] == 8 and row["ok"] == 8 and row["errors"] == 0 and row["cached"] == 0 and row["skipped"] == 0
    assert row["input_tokens"] == res.df["input_tokens"].sum()
    assert row["output_tokens"] == res.df["output_tokens"].sum()
    assert row["cost_usd"] == pytest.approx(float(res.df["cost_usd"].sum()))
    assert row["finished_at"] >= row["started_at"]
    assert 0 < row["wall_s"] <= (row["finished_at"] - row["started_at"]).total_seconds() + 0.5
    assert row["models"] == ["local/tiny", "local/small"] and row["prompts"] == 2
    assert row["llmlab_version"] == ll.__version__
    rec = history.record(res.sweep_id)
    assert rec["spec"]["prompts"] == [{"prompt": "What is a rainbow?"}, {"prompt": "Why is the sky blue?"}]
    assert rec["spec"]["prompt_fingerprint"] and rec["spec"]["temperature"] == [0.0, 0.9]
    versions = rec["info"]["versions"]
    assert (
        versions["llmlab"] == ll.__version__ and versions["openai"] and versions["traceloop-sdk"] and versions["python"]
    )
    assert rec["info"]["providers"] == {"local": {"base_url": "embedded"}}
    # under pytest the "script" is pytest's entry point: a real file path
    assert rec["info"]["source"]["kind"] == "script"
    assert rec["info"]["pid"] > 0 and rec["info"]["host"]


def test_tags_notes_and_filters():
    a = ll.Sweep(prompts=["hi"], models=["local/tiny"], temperature=0.0, max_tokens=4, name="summarize-v1").run(
        display=False
    )
    b = ll.Sweep(prompts=["hi"], models=["local/tiny"], temperature=0.5, max_tokens=4, name="summarize-v2").run(
        display=False
    )
    c = ll.Sweep(prompts=["hi"], models=["local/tiny"], temperature=1.0, max_tokens=4, name="other").run(display=False)
    assert a.tag("baseline", "v1") is a
    b.tag("candidate").tag("v1")
    b.note("shorter template").note("looks better", append=True)
    df = ll.sweeps()
    assert df.set_index("sweep_id").loc[b.sweep_id, "tags"] == ["candidate", "v1"]
    assert df.set_index("sweep_id").loc[b.sweep_id, "note"] == "shorter template\nlooks better"
    assert set(ll.sweeps(tag="v1")["sweep_id"]) == {a.sweep_id, b.sweep_id}
    assert ll.sweeps(tag=["v1", "candidate"])["sweep_id"].tolist() == [b.sweep_id]
    assert set(ll.sweeps(name="summarize-*")["sweep_id"]) == {a.sweep_id, b.sweep_id}
    assert ll.sweeps(name="other")["sweep_id"].tolist() == [c.sweep_id]
    assert (
        len(ll.sweeps(since="1h")) == 3 and len(ll.sweeps(since=pd.Timestamp.now(tz="UTC") + pd.Timedelta("1h"))) == 0
    )
    # ages in days and weeks, as people type them (no pandas deprecation warning: warnings are errors here)
    for age in ("7d", "2 days", "1w", "90m", "0.5h"):
        assert len(ll.sweeps(since=age)) == 3, age
    assert len(ll.sweeps(limit=2)) == 2
    history.untag_sweep(a.sweep_id, "v1")
    assert ll.sweeps(tag="v1")["sweep_id"].tolist() == [b.sweep_id]
    b.note(None)
    assert pd.isna(ll.sweeps(name="summarize-v2").iloc[0]["note"])


def test_bad_input_names_the_input():
    ll.Sweep(prompts=["hi"], models=["local/tiny"], temperature=0.0, max_tokens=4).run(display=False)
    with pytest.raises(ll.ValidationError, match="sweep_id='sw-nope'.*no such sweep in"):
        ll.load("sw-nope")
    with pytest.raises(ll.ValidationError, match="since='yesterday-ish'"):
        ll.sweeps(since="yesterday-ish")
    with pytest.raises(ll.ValidationError, match="tags=''"):
        ll.load(ll.sweeps().iloc[0]["sweep_id"]).tag("")
    with pytest.raises(ll.ValidationError, match="ambiguous"):
        ll.Sweep(prompts=["ho"], models=["local/tiny"], temperature=0.0, max_tokens=4).run(display=False)
        ll.load("sw-")


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_commit_and_dirty_flag(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    (repo / "prompts.txt").write_text("v1\n")
    git("add", "prompts.txt")
    git("commit", "-q", "-m", "init")
    monkeypatch.chdir(repo)
    sweep = ll.Sweep(prompts=["hi"], models=["local/tiny"], temperature=0.0, max_tokens=4)
    clean = sweep.run(display=False, cache=False)
    (repo / "prompts.txt").write_text("v2\n")
    dirty = sweep.run(display=False, cache=False)
    (repo / "scratch.ipynb").write_text("{}")  # untracked files do not make the tree dirty
    git("checkout", "prompts.txt")
    clean2 = sweep.run(display=False, cache=False)
    df = ll.sweeps().set_index("sweep_id")
    head = git("rev-parse", "HEAD")
    assert df.loc[clean.sweep_id, "git_commit"] == head and not df.loc[clean.sweep_id, "git_dirty"]
    assert df.loc[dirty.sweep_id, "git_commit"] == head and df.loc[dirty.sweep_id, "git_dirty"]
    assert not df.loc[clean2.sweep_id, "git_dirty"]
    assert history.record(clean.sweep_id)["info"]["git"]["root"] == str(repo.resolve())
    # outside any repository: no git info, and the sweep still runs
    outside = tmp_path / "plain"
    outside.mkdir()
    monkeypatch.chdir(outside)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    res = sweep.run(display=False)
    assert ll.sweeps().iloc[0]["sweep_id"] == res.sweep_id and pd.isna(ll.sweeps().iloc[0]["git_commit"])


def test_notebook_path_from_the_jupyter_session(monkeypatch, tmp_path):
    nb = tmp_path / "tuning.ipynb"
    nb.write_text("{}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JPY_SESSION_NAME", "work/tuning.ipynb")  # jupyter_server: path relative to its root
    res = ll.Sweep(prompts=["hi"], models=["local/tiny"], temperature=0.0, max_tokens=4).run(display=False)
    source = history.record(res.sweep_id)["info"]["source"]
    assert source["kind"] == "notebook" and source["path"] == str(nb)
    assert ll.sweeps().iloc[0]["source"] == str(nb)


def test_history_is_shared_between_processes(home):
    """Another process (think: a second kernel) runs a sweep on the same home while this one runs
    its own; each sees the other's experiment, and loads it with the very same frame."""
    code = (
        "import sys, llmlab as ll\n"
        "res = ll.Sweep(prompts=['What is a rainbow?', 'Why is the sky blue?'], models=['local/tiny'],\n"
        "               temperature=[0.0, 0.8], max_tokens=10, name='child').run(display=False)\n"
        "res.df.to_pickle(sys.argv[1])\n"
        "print(res.sweep_id)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(home.parent / "child.pkl")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    mine = ll.Sweep(
        prompts=["Explain photosynthesis."],
        models=["local/small"],
        temperature=[0.0, 0.5, 1.0],
        max_tokens=10,
        name="parent",
    ).run(display=False)
    mine.tag("parent")
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    child_id = out.strip().splitlines()[-1]
    listed = ll.sweeps().set_index("sweep_id")
    assert set(listed.index) == {child_id, mine.sweep_id}
    assert listed.loc[child_id, "name"] == "child" and listed.loc[child_id, "ok"] == 4
    pd.testing.assert_frame_equal(ll.load(child_id).df, pd.read_pickle(home.parent / "child.pkl"))


def test_history_survives_a_kernel_restart(home, tmp_path):
    """A real Jupyter kernel runs a sweep from a notebook session and tags it; after a kernel restart
    (a new process) the experiment is listed, with its notebook path, and loads the same frame."""
    jupyter_client = pytest.importorskip("jupyter_client")
    import os

    work = tmp_path / "nbdir"
    work.mkdir()
    (work / "tuning.ipynb").write_text("{}")
    env = {
        **os.environ,
        "LLMLAB_HOME": str(home),
        "LLMLAB_DATAKIT_URL": "none",
        "JPY_SESSION_NAME": "nbdir/tuning.ipynb",
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    }
    km, kc = jupyter_client.manager.start_new_kernel(kernel_name="python3", env=env, cwd=str(work), startup_timeout=60)

    def run(code: str) -> str:
        out: list[str] = []

        def hook(msg: dict) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append("\n".join(msg["content"]["traceback"]))

        reply = kc.execute_interactive(code, timeout=90, output_hook=hook)
        assert reply["content"]["status"] == "ok", "".join(out)
        return "".join(out)

    try:
        first = run(
            "import llmlab as ll\n"
            "res = ll.Sweep(prompts=['What is a rainbow?'], models=['local/tiny'], temperature=[0.0, 0.7],\n"
            "               max_tokens=10, name='in-kernel').run(display=False)\n"
            "res.tag('kernel').note('ran in a notebook')\n"
            f"res.df.to_pickle({str(tmp_path / 'kernel.pkl')!r})\n"
            "print(res.sweep_id)\n"
        )
        sweep_id = first.strip().splitlines()[-1]
        km.restart_kernel(now=True)
        kc.wait_for_ready(timeout=60)
        second = run(
            "import llmlab as ll, json\n"
            "assert 'res' not in globals()  # a fresh process\n"
            f"res = ll.load({sweep_id!r})\n"
            "row = ll.sweeps(tag='kernel').iloc[0]\n"
            f"res.df.to_pickle({str(tmp_path / 'reloaded.pkl')!r})\n"
            "print(json.dumps({'id': row['sweep_id'], 'note': row['note'], 'source': row['source'], 'n': len(res.df)}))\n"
        )
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    seen = json.loads(second.strip().splitlines()[-1])
    assert seen == {"id": sweep_id, "note": "ran in a notebook", "source": str(work / "tuning.ipynb"), "n": 2}
    pd.testing.assert_frame_equal(pd.read_pickle(tmp_path / "reloaded.pkl"), pd.read_pickle(tmp_path / "kernel.pkl"))
    pd.testing.assert_frame_equal(ll.load(sweep_id).df, pd.read_pickle(tmp_path / "kernel.pkl"))
    assert history.record(sweep_id)["info"]["source"]["kernel_id"]  # the kernel is identified too


def test_interrupted_sweep_is_reported(home):
    """A process that died mid-sweep leaves status 'running'; its pid is gone, so it lists as interrupted."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    dead_pid = int(proc.stdout)
    store = get_store()
    store.start_sweep(
        "sw-dead",
        "crashed",
        {"models": ["local/tiny"]},
        {"calls": 3, "pid": dead_pid, "host": __import__("socket").gethostname()},
    )
    row = ll.sweeps().set_index("sweep_id").loc["sw-dead"]
    assert row["status"] == "interrupted"


def test_load_without_stored_content():
    """trace_content=False keeps prompt and completion text out of the store: a loaded result has
    NA there and everything else equal; the spec keeps no prompt copy."""
    ll.configure(trace_content=False, datakit=None)
    res = ll.Sweep(
        prompts=["What is a rainbow?", "Why is the sky blue?"], models=["local/tiny"], temperature=[0.0], max_tokens=8
    ).run(display=False)
    loaded = ll.load(res.sweep_id)
    assert loaded.df["prompt"].isna().all() and loaded.df["completion"].isna().all()
    assert res.df["completion"].notna().all()
    rest = [c for c in res.df.columns if c not in ("prompt", "completion")]
    pd.testing.assert_frame_equal(loaded.df[rest], res.df[rest])
    assert loaded.spec["prompts"] is None and loaded.spec["prompt_fingerprint"] == res.spec["prompt_fingerprint"]
    assert "(not stored)" in str(ll.diff(res.sweep_id, res.sweep_id))
