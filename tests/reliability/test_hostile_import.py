"""Hostile export files (issue #16): ``llmlab import`` verifies the whole file before writing anything,
imports only cache entries that answer its own sweep's requests, bounds decompression, and refuses
what would break later, naming the file and the field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

import llmlab as ll
from llmlab import history
from llmlab.errors import ValidationError
from llmlab.store import get_store
from llmlab.tracing import flush


def _sweep(prompts: list[str], name: str | None = None) -> ll.Sweep:
    return ll.Sweep(prompts=prompts, models=["fault/tiny"], temperature=0.0, max_tokens=6, name=name)


def _export(tmp_path: Path, name: str = "good.json") -> tuple[dict[str, Any], Path]:
    res = _sweep(["export me"], name="exported").run(display=False)
    flush()
    out = history.export_sweep(res.sweep_id, tmp_path / name)
    return json.loads(out.read_text()), out


def _write(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc))
    return path


def _store_counts() -> dict[str, int]:
    st = get_store()
    return {t: st.read(f"SELECT count(*) FROM {t}")[0][0] for t in ("sweeps", "calls", "cache", "spans", "sweep_tags")}


# --- item 2: an import cannot plant answers for another sweep ------------------------------------


def test_import_cannot_plant_a_cached_answer_for_another_sweeps_call(fault, tmp_path):
    doc, _ = _export(tmp_path)
    victim = _sweep(["what is 2+2?"]).grid.calls[0]  # a request someone will send here later
    forged_row = {**json.loads(doc["calls"][0]["row_json"]), "call_id": victim.call_id, "completion": "PLANTED"}
    doc["sweep"]["sweep_id"] = "sw-forged"
    # both ways in: a call row claiming the victim's call id, and a bare entry for a call the file does not have
    doc["calls"].append({**doc["calls"][0], "call_id": victim.call_id, "seq": 9, "row_json": json.dumps(forged_row)})
    planted = {"call_id": victim.call_id, "model": "fault/tiny", "created_at": "2020-01-01T00:00:00Z"}
    planted["response_json"] = json.dumps({**forged_row, "cached": False})
    doc["cache"] = [planted, {**planted, "call_id": "0123456789abcdef0123"}]
    ll.configure(home=tmp_path / "victim-home", datakit=None)
    with pytest.warns(UserWarning, match="not imported"):
        assert history.import_sweep(_write(tmp_path / "forged.json", doc)) == "sw-forged"
    assert get_store().read("SELECT count(*) FROM cache")[0][0] == 0
    fault.app.reset()
    res = _sweep(["what is 2+2?"]).run(display=False)
    assert fault.stats()["requests"] == 1  # the request was really sent
    assert not res.df["cached"].any() and "PLANTED" not in res.df["completion"].tolist()


def test_genuine_cache_entries_still_travel(fault, tmp_path):
    doc, out = _export(tmp_path)
    assert doc["cache"]
    ll.configure(home=tmp_path / "other", datakit=None)
    history.import_sweep(out)
    fault.app.reset()
    again = _sweep(["export me"]).run(display=False)
    assert again.df["cached"].all() and fault.stats()["requests"] == 0


# --- item 10: refused up front, naming the file and the field -------------------------------------


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["calls"][0].update(row_json="{not json"), "calls[0].row_json"),
        (lambda d: d["sweep"].update(spec_json="[oops"), "sweep.spec_json"),
        (lambda d: d["sweep"].update(spec_json="[1, 2]"), "sweep.spec_json"),
        (lambda d: d["sweep"].update(sweep_id=""), "sweep.sweep_id"),
        (lambda d: d["sweep"].update(sweep_id="../../etc"), "sweep.sweep_id"),
        (lambda d: d["sweep"].update(sweep_id="sw\x00nul"), "sweep.sweep_id"),
        (lambda d: d.update(version=-7), "version=-7"),
        (lambda d: d.update(version="1"), "version='1'"),
        (lambda d: d.update(version=True), "version=True"),
        (lambda d: d["spans"][0].update(otlp_b64="!!not base64!!"), "spans[0].otlp_b64"),
        (lambda d: d["spans"][0].update(trace_id="../x"), "spans[0].trace_id"),
        (lambda d: d["calls"][0].update(seq="first"), "calls[0].seq"),
        (lambda d: d["calls"][0].update(call_id={"a": 1}), "calls[0].call_id"),
        (lambda d: d["calls"].append(dict(d["calls"][0])), "appears twice"),
        (lambda d: d["cache"][0].update(response_json="nope"), "cache[0].response_json"),
        (lambda d: d["tags"].append({"tag": "", "created_at": "x"}), "tags[0].tag"),
        (lambda d: d["sweep"].pop("created_at"), "sweep.created_at is missing"),
    ],
)
def test_malformed_fields_are_refused_before_anything_is_written(fault, tmp_path, mutate, field):
    doc, _ = _export(tmp_path)
    ll.configure(home=tmp_path / "other", datakit=None)
    before = _store_counts()
    mutate(doc)
    bad = _write(tmp_path / "bad.json", doc)
    with pytest.raises(ValidationError) as err:
        history.import_sweep(bad)
    assert str(bad) in str(err.value) and field in str(err.value)
    assert _store_counts() == before


def test_an_imported_sweep_loads_and_deletes(fault, tmp_path):
    doc, out = _export(tmp_path)
    ll.configure(home=tmp_path / "other", datakit=None)
    sid = history.import_sweep(out)
    assert len(ll.load(sid).df) == 1
    history.delete(sid)
    assert ll.sweeps().empty


# --- item 7: decompression is bounded -----------------------------------------------------------


def _zero_bomb(path: Path, inflated: int) -> Path:
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\0" * (1 << 20)
    with open(path, "wb") as f:
        for _ in range(inflated >> 20):
            f.write(comp.compress(block))
        f.write(comp.flush())
    return path


def test_a_gzip_bomb_is_refused_while_inflating_with_bounded_memory(tmp_path):
    bomb = _zero_bomb(tmp_path / "bomb.json.gz", 1 << 30)  # ~1 MB holding 1 GiB of zeros
    assert bomb.stat().st_size < 2 << 20
    code = (
        "import resource, sys\n"
        "from llmlab import history\n"
        "from llmlab.errors import ValidationError\n"
        "try:\n"
        "    history.import_sweep(sys.argv[1])\n"
        "except ValidationError as exc:\n"
        "    print(exc)\n"
        # VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child of a big pytest process would report its parent's peak
        "print('maxrss_kb', [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')][0])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-c", code, str(bomb)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert str(bomb) in done.stdout and "decompresses to more than 256 MiB" in done.stdout
    rss_mb = int(done.stdout.split("maxrss_kb")[1]) / 1024
    assert rss_mb < 800, f"peak {rss_mb:.0f} MB"  # was 2.2 GB: the cap bounds it


def test_the_cap_is_configurable_and_covers_plain_files(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMLAB_IMPORT_MAX_MB", "1")
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (2 << 20) + b"{}")
    with pytest.raises(ValidationError, match="over the import limit of 1 MiB"):
        history.import_sweep(big)
    small_bomb = _zero_bomb(tmp_path / "b.json.gz", 4 << 20)
    with pytest.raises(ValidationError, match="decompresses to more than 1 MiB"):
        history.import_sweep(small_bomb)


# --- the adversarial pass: hostile inputs, each refused with one sentence naming the file ---------


def _cli(*args: str, home: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLMLAB_HOME": str(home), "LLMLAB_DATAKIT_URL": "none"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return subprocess.run(
        [sys.executable, "-m", "llmlab", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_files_that_are_not_regular_files_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)  # reading it would block until a writer comes
    (tmp_path / "zero.json").symlink_to("/dev/zero")  # never ends
    (tmp_path / "dir.json").mkdir()
    for target in (fifo, tmp_path / "zero.json", Path("/dev/zero"), tmp_path / "dir.json"):
        done = _cli("import", str(target), home=tmp_path / "home", timeout=30)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert str(target) in done.stderr and ("not a regular file" in done.stderr or "directory" in done.stderr)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (lambda raw: gzip_bytes(raw)[: len(gzip_bytes(raw)) // 2], "corrupt gzip data"),
        (lambda raw: gzip_bytes(raw) + b"trailing junk", "corrupt gzip data"),
        (lambda raw: raw[:-1] + b',"format":"llmlab.experiment"}', "duplicate key 'format'"),
        (lambda raw: b"[" * 200_000 + b"]" * 200_000, "invalid JSON"),
        (lambda raw: raw.replace(b'"version":1', b'"version":1.0'), "version=1.0"),
        (lambda raw: raw.replace(b'"seq":0', b'"seq":1000000000000000000000000000000'), "does not fit a 64-bit"),
    ],
)
def test_hostile_file_contents_are_refused_naming_the_file(fault, tmp_path, content, problem):
    _, out = _export(tmp_path)
    bad = tmp_path / "hostile.json.gz"
    bad.write_bytes(content(out.read_bytes()))
    done = _cli("import", str(bad), home=tmp_path / "other")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert str(bad) in done.stderr and problem in done.stderr


def gzip_bytes(raw: bytes) -> bytes:
    return zlib.compress(raw, 6, wbits=31)


def test_control_characters_in_names_and_completions_do_not_reach_the_terminal(fault, tmp_path):
    res = _sweep(["hello"], name="evil\x1b[2J\x1b[31mred\x07 \u202eeman").run(display=False)
    flush()
    out = history.export_sweep(res.sweep_id, tmp_path / "evil.json")
    doc = json.loads(out.read_text())
    row = json.loads(doc["calls"][0]["row_json"])
    row["completion"] = "nul\x00here\x1b]0;pwned\x07"
    doc["calls"][0]["row_json"] = json.dumps(row)
    _write(out, doc)
    for args in (("import", str(out)), ("show", res.sweep_id), ("sweeps",)):
        done = _cli(*args, home=tmp_path / "other")
        assert done.returncode == 0, done.stderr
        shown = done.stdout + done.stderr
        assert not any(ch in shown for ch in "\x1b\x07\x00\u202e"), repr(shown)
        assert "Traceback" not in shown and "UserWarning" not in shown
    assert "\\x1b[2J" in done.stdout  # shown escaped, not dropped
    ll.configure(home=tmp_path / "other", datakit=None)
    assert ll.load(res.sweep_id).df["completion"][0] == row["completion"]  # stored exactly


def test_an_import_cannot_add_spans_to_another_sweep(fault, tmp_path):
    victim = _sweep(["victim"]).run(display=False)
    doc, _ = _export(tmp_path)
    flush()
    before = get_store().read("SELECT count(*) FROM spans WHERE sweep_id = ?", (victim.sweep_id,))[0][0]
    doc["sweep"]["sweep_id"] = "sw-planter"
    for i, span in enumerate(doc["spans"]):
        span.update(sweep_id=victim.sweep_id, span_id=f"{i:016x}")
    with pytest.warns(UserWarning):  # its cache entries: not its own calls' any more either
        history.import_sweep(_plant(tmp_path, doc))
    after = get_store().read("SELECT count(*) FROM spans WHERE sweep_id = ?", (victim.sweep_id,))[0][0]
    assert after == before


def _plant(tmp_path: Path, doc: dict[str, Any]) -> Path:
    doc["cache"] = [{**doc["cache"][0], "call_id": "f" * 20}]
    return _write(tmp_path / "plant.json", doc)


def test_the_same_file_imported_three_times_at_once(fault, tmp_path):
    _, out = _export(tmp_path)
    env = {**os.environ, "LLMLAB_HOME": str(tmp_path / "other"), "LLMLAB_DATAKIT_URL": "none"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "llmlab", "import", str(out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    results = [(p.wait(timeout=60), p.stderr.read().decode()) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 1, 1]
    assert all("already in" in err and "Traceback" not in err for rc, err in results if rc)
    ll.configure(home=tmp_path / "other", datakit=None)
    assert len(ll.sweeps()) == 1 and len(ll.load(str(ll.sweeps()["sweep_id"][0])).df) == 1
