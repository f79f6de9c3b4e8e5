"""Export → import round trip onto another home, delete without touching shared cache entries,
an upgrade of a home written by an older llmlab (schema m001 only), and the CLI mirror."""

from __future__ import annotations

import gzip
import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

import llmlab as ll
from llmlab import history, schema
from llmlab.cli import main
from llmlab.store import get_store
from llmlab.store.migrations import MIGRATIONS
from llmlab.tracing import flush

FIXTURES = Path(__file__).parent / "fixtures"


def _spans(sweep_id: str) -> pd.DataFrame:
    return ll.spans(sweep_id=sweep_id, source="local").sort_values("span_id").reset_index(drop=True)


@pytest.mark.filterwarnings("ignore::llmlab.pricing.PriceWarning")  # "keyed/tiny" has no price: NA cost is fine here
def test_export_import_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("SECRETKEY_FOR_TEST", "sk-test-abcdef0123456789SECRET")
    from llmlab.localmodel import ensure_server

    ll.provider("keyed", base_url=ensure_server(), api_key_env="SECRETKEY_FOR_TEST")  # a key no file may hold
    res = ll.Sweep(
        prompts=["What is a rainbow?", "Why is the sky blue?"],
        models=["keyed/tiny", "local/small"],
        temperature=[0.0, 0.8],
        max_tokens=10,
        name="ship-me",
    ).run(display=False)
    res.tag("export", "v2").note("to the other machine")
    flush()
    listed = ll.sweeps().set_index("sweep_id").loc[res.sweep_id]
    spans_before = _spans(res.sweep_id)
    assert len(spans_before) == 8
    out = history.export_sweep(res.sweep_id, tmp_path / "exp" / "ship.json.gz")
    raw = gzip.decompress(out.read_bytes())
    assert b"sk-test-abcdef0123456789SECRET" not in raw
    doc = json.loads(raw)
    assert doc["format"] == "llmlab.experiment" and len(doc["calls"]) == 8 and len(doc["spans"]) == 8
    assert all(s["otlp_b64"] for s in doc["spans"])  # the OTLP protobuf travels too

    ll.configure(home=tmp_path / "other-home", datakit=None)  # "another machine"
    assert ll.sweeps().empty
    assert history.import_sweep(out) == res.sweep_id
    loaded = ll.load(res.sweep_id)
    pd.testing.assert_frame_equal(loaded.df, res.df)
    assert loaded.spec == res.spec
    again = ll.sweeps().set_index("sweep_id").loc[res.sweep_id]
    pd.testing.assert_series_equal(again, listed)  # tags, note, counts, git, source: all of it
    pd.testing.assert_frame_equal(_spans(res.sweep_id), spans_before)
    assert len(ll.charts.latency(loaded.df, by="model").data) >= 1
    assert len(ll.charts.latency(_spans(res.sweep_id), by="temperature").data) >= 1
    pending = get_store().read("SELECT count(*) FROM spans WHERE export_state IS NOT NULL")[0][0]
    assert pending == 0  # imported spans are not re-sent to this home's DataKit
    # re-running the sweep on the other machine is served from the imported cache
    rerun = ll.Sweep(
        prompts=["What is a rainbow?", "Why is the sky blue?"],
        models=["keyed/tiny", "local/small"],
        temperature=[0.0, 0.8],
        max_tokens=10,
    ).run(display=False)
    assert rerun.df["cached"].all() and rerun.df["completion"].tolist() == res.df["completion"].tolist()

    with pytest.raises(ll.ValidationError, match="already in"):
        history.import_sweep(out)
    ll.load(res.sweep_id).note("edited here")
    assert history.import_sweep(out, replace=True) == res.sweep_id
    assert ll.sweeps().set_index("sweep_id").loc[res.sweep_id, "note"] == "to the other machine"
    plain = history.export_sweep(res.sweep_id, tmp_path / "plain.json")  # uncompressed works too
    assert json.loads(plain.read_text())["sweep"]["sweep_id"] == res.sweep_id


def test_import_rejects_bad_files(tmp_path):
    with pytest.raises(ll.ValidationError, match="file='.*nope.json': file not found"):
        history.import_sweep(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ll.ValidationError, match="not an llmlab export"):
        history.import_sweep(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ll.ValidationError, match="not an llmlab export"):
        history.import_sweep(other)
    future = tmp_path / "future.json"
    future.write_text(json.dumps({"format": "llmlab.experiment", "version": 99, "sweep": {}}))
    with pytest.raises(ll.ValidationError, match="newer than this llmlab reads"):
        history.import_sweep(future)
    with pytest.raises(ll.ValidationError, match="out='x.csv'"):
        history.export_sweep("whatever", "x.csv")


def test_delete_keeps_cache_entries_other_sweeps_share():
    store = get_store()
    prompts = ["What is a rainbow?", "Why is the sky blue?"]
    first = ll.Sweep(prompts=prompts, models=["local/tiny"], temperature=[0.0, 0.5], max_tokens=8).run(display=False)
    rerun = ll.Sweep(prompts=prompts, models=["local/tiny"], temperature=[0.0], max_tokens=8).run(display=False)
    alone = ll.Sweep(prompts=["Explain photosynthesis."], models=["local/tiny"], temperature=0.0, max_tokens=8).run(
        display=False
    )
    flush()
    assert rerun.df["cached"].all()  # its 2 calls point at first's responses and spans
    shared = set(rerun.df["call_id"])
    own = set(first.df["call_id"]) - shared

    def cached(ids):
        return set(store.cached_responses(ids))

    removed = ll.delete(first.sweep_id)
    assert removed["sweeps"] == 1 and removed["calls"] == 4 and removed["cache"] == 2
    assert cached(shared) == shared and cached(own) == set()  # shared entries stay, first's own go
    assert removed["spans"] == 2  # the spans rerun's cached rows point at stay
    kept_spans = store.read("SELECT span_id FROM spans WHERE sweep_id=?", (first.sweep_id,))
    assert {r[0] for r in kept_spans} == set(rerun.df["span_id"])
    assert first.sweep_id not in set(ll.sweeps()["sweep_id"])
    with pytest.raises(ll.ValidationError, match="no such sweep"):
        ll.load(first.sweep_id)
    pd.testing.assert_frame_equal(ll.load(rerun.sweep_id).df, rerun.df)  # the other sweep is intact

    ll.delete(rerun.sweep_id)
    assert cached(shared) == set()  # nobody uses them any more
    assert store.read("SELECT count(*) FROM spans WHERE sweep_id=?", (first.sweep_id,))[0][0] == 0
    ll.delete(alone.sweep_id, keep_cache=True)
    assert cached(alone.df["call_id"]) == set(alone.df["call_id"])
    assert ll.sweeps().empty

    store.start_sweep(
        "sw-live", None, {}, {"pid": __import__("os").getpid(), "host": __import__("socket").gethostname()}
    )
    with pytest.raises(ll.ValidationError, match="still running"):
        ll.delete("sw-live")
    assert ll.delete("sw-live", force=True)["sweeps"] == 1
    with pytest.raises(ll.ValidationError, match="sweep_id='sw-gone': no such sweep"):
        ll.delete("sw-gone")


def _old_home(home: Path) -> None:
    """Restore the old home's database from its SQL dump (a text fixture, byte-for-byte the old schema and rows)."""
    home.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(home / "llmlab.db")
    db.executescript((FIXTURES / "home-m001.sql").read_text(encoding="utf-8"))
    db.close()


def test_upgrade_of_a_home_written_by_an_older_version(home):
    """The fixture was written by llmlab at commit c1a5f71 (schema m001, see fixtures/make_m001_home.py)."""
    _old_home(home)
    raw = sqlite3.connect(home / "llmlab.db")
    assert [r[0] for r in raw.execute("SELECT name FROM _migrations")] == ["m001_initial"]
    raw.close()
    listed = ll.sweeps()  # opening the store applies m002 and later migrations
    applied = [r[0] for r in get_store().read("SELECT name FROM _migrations ORDER BY name")]
    assert applied == sorted(name for name, _ in MIGRATIONS)
    assert listed["name"].tolist() == ["old-dead", "old-explain", "old-explain"]
    first, cached_run, dead = listed.iloc[2], listed.iloc[1], listed.iloc[0]
    expected = pd.read_json(FIXTURES / "home-m001-first-sweep.jsonl", lines=True, dtype=False)
    # totals are back-filled from the stored calls
    assert (first["calls"], first["ok"], first["errors"], first["cached"]) == (6, 6, 0, 0)
    assert (
        first["input_tokens"] == expected["input_tokens"].sum()
        and first["output_tokens"] == expected["output_tokens"].sum()
    )
    assert first["cost_usd"] == pytest.approx(expected["cost_usd"].sum())
    assert (cached_run["cached"], cached_run["cost_usd"]) == (6, 0.0)
    assert (dead["calls"], dead["errors"]) == (1, 1)
    assert first["wall_s"] > 0 and pd.isna(first["git_commit"]) and first["tags"] == []
    # the old sweep loads as the old version returned it
    loaded = ll.load(first["sweep_id"])
    assert loaded.df["call_id"].tolist() == expected["call_id"].tolist()
    assert loaded.df["completion"].tolist() == expected["completion"].tolist()
    pd.testing.assert_series_equal(
        loaded.df["latency_ms"].astype(float), expected["latency_ms"].astype(float), check_names=False
    )
    # res.df: settings, prompt and completion first, ids and timestamps last; every canonical column present
    assert list(loaded.df.columns[: len(schema.SWEEP_ORDER)]) == schema.SWEEP_ORDER
    assert set(schema.CANONICAL_COLUMNS + schema.SWEEP_COLUMNS) <= set(loaded.df.columns)
    assert loaded.spec["template"] == "Explain briefly: {text}" and loaded.stopped is None
    assert len(ll.spans(sweep_id=first["sweep_id"], source="local")) == 6  # old spans read back
    # new features work on old experiments
    loaded.tag("legacy").note("from the old home")
    assert ll.sweeps(tag="legacy")["sweep_id"].tolist() == [first["sweep_id"]]
    cmp = ll.compare_sweeps(first["sweep_id"], cached_run["sweep_id"], metric="output_tokens")
    assert len(cmp.cells) == 6 and cmp.metrics.iloc[0]["diff"] == 0
    # and a new sweep in the same home sits next to them
    new = ll.Sweep(prompts=["hi"], models=["local/tiny"], temperature=0.0, max_tokens=4).run(display=False)
    assert ll.sweeps()["sweep_id"].iloc[0] == new.sweep_id


def test_migrations_are_idempotent_and_numbered(home):
    _old_home(home)
    from llmlab.store import migrate
    from llmlab.store.database import connect

    db = connect(home / "llmlab.db")
    first = migrate(db)
    assert first == [name for name, _ in MIGRATIONS[1:]]
    assert migrate(db) == []  # re-opening applies nothing
    names = [name for name, _ in MIGRATIONS]
    assert names == sorted(names) and all(n[0] == "m" and n[1:4].isdigit() for n in names)
    assert len({n[:4] for n in names}) == len(names)  # no two migrations share a number
    db.close()


def test_cli_mirror(tmp_path, capsys):
    res = ll.Sweep(
        prompts=["What is a rainbow?"], models=["local/tiny"], temperature=[0.0, 0.9], max_tokens=8, name="cli-sweep"
    ).run(display=False)
    res.tag("cli")
    other = ll.Sweep(
        prompts=["What is a rainbow?"], models=["local/tiny"], temperature=[0.9], max_tokens=8, seed=4, name="cli-other"
    ).run(display=False)
    assert main(["sweeps"]) == 0
    out = capsys.readouterr().out
    assert res.sweep_id in out and other.sweep_id in out and "2 sweeps" in out
    assert main(["sweeps", "--tag", "cli", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["sweep_id"] for r in rows] == [res.sweep_id] and rows[0]["tags"] == ["cli"]
    assert main(["show", res.sweep_id]) == 0
    out = capsys.readouterr().out
    assert (
        "cli-sweep" in out
        and "2 planned: 2 ok, 0 errors" in out
        and "temperature=[0.0, 0.9]" in out
        and "latency_p50" in out
    )
    assert main(["compare", res.sweep_id, other.sweep_id, "--metric", "output_tokens"]) == 0
    assert "1 common cells" in capsys.readouterr().out
    assert main(["diff", res.sweep_id, other.sweep_id]) == 0
    assert "a: " in capsys.readouterr().out
    target = tmp_path / "cli.json.gz"
    assert main(["export", res.sweep_id, "--out", str(target)]) == 0
    assert target.exists() and "wrote" in capsys.readouterr().out
    other_home = tmp_path / "home2"
    assert main(["import", str(target), "--home", str(other_home)]) == 0
    assert f"imported {res.sweep_id}" in capsys.readouterr().out
    assert main(["import", str(target), "--home", str(other_home)]) == 1
    assert "Error: file=" in capsys.readouterr().err
    assert main(["show", "sw-unknown", "--home", str(other_home)]) == 1
    assert "no such sweep" in capsys.readouterr().err
    assert main(["delete", res.sweep_id, "--yes", "--home", str(other_home)]) == 0
    assert "1 sweeps" in capsys.readouterr().out


def test_two_processes_upgrading_one_old_home_at_once(home):
    """Two kernels opening an old home together: each migration is applied exactly once."""
    import subprocess
    import sys

    _old_home(home)
    code = "import llmlab as ll; print(len(ll.sweeps()))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert out.strip() == "3"
    rows = get_store().read("SELECT name, count(*) FROM _migrations GROUP BY name")
    assert sorted(rows) == sorted((name, 1) for name, _ in MIGRATIONS)


def test_upgrade_of_a_home_at_m010_keeps_its_call_rows_cache_entries_and_span_bytes(home):
    """m011 rebuilds the cache table (an entry may be a call row) and adds calls.fmt: rows written before read as they did."""
    import zlib

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from llmlab.sqlkit import Migrations
    from llmlab.store import callrows, spanbytes
    from llmlab.store.database import SPAN_RECORD_COLUMNS

    home.mkdir(parents=True)
    db = sqlite3.connect(home / "llmlab.db", isolation_level=None)
    old = Migrations("_migrations", ledger="names")
    for item in MIGRATIONS[:10]:  # the schema llmlab had before m011
        old(item.fn)
    assert old.apply(db)[-1] == "m010_rating_scale"
    row = {"sweep_id": "sw-old", "call_id": "c1", "completion": "an old answer", "status": "ok", "cached": False}
    entry = {k: row.get(k) for k in callrows.CACHE_FIELDS}
    db.execute(
        "INSERT INTO sweeps (sweep_id, created_at, status, spec_json) VALUES ('sw-old', '2026-01-01T00:00:00', 'finished', '{}')"
    )
    db.execute(
        "INSERT INTO calls (sweep_id, call_id, seq, status, created_at, row_json) VALUES ('sw-old', 'c1', 0, 'ok', 'x', ?)",
        (json.dumps(row),),
    )
    db.execute(
        "INSERT INTO cache (call_id, model, created_at, response_json) VALUES ('c1', 'local/tiny', 'x', ?)",
        (json.dumps(entry),),
    )
    request = ExportTraceServiceRequest()
    kv = request.resource_spans.add().scope_spans.add().spans.add().attributes.add()
    kv.key, kv.value.string_value = "llmlab.call_id", "c1"
    record = dict.fromkeys(SPAN_RECORD_COLUMNS)
    record.update(trace_id="t1", span_id="s1", start_ns=1, end_ns=2, is_llm=1, row_json="{}", attrs_json="{}")
    record["otlp"] = zlib.compress(request.SerializeToString(), 6)  # packed before the dictionary
    db.execute(
        f"INSERT INTO spans ({', '.join(chr(34) + c + chr(34) for c in record)}) VALUES ({', '.join('?' * len(record))})",
        list(record.values()),
    )
    db.close()

    store = get_store(home)  # opening the home applies m011
    applied = [r[0] for r in store.read("SELECT name FROM _migrations ORDER BY name")]
    assert applied[-1] == "m011_compact_calls_and_cache"
    assert "WITHOUT ROWID" in store.read("SELECT sql FROM sqlite_master WHERE name = 'cache'")[0][0]
    assert store.call_rows("sw-old") == [row]
    assert store.cached_responses(["c1", "c2"]) == {"c1": entry}
    assert store.read("SELECT response_json IS NOT NULL, sweep_id FROM cache") == [(1, None)]
    (otlp,) = store.read("SELECT otlp FROM spans")[0]
    assert spanbytes.span_attributes("{}", otlp) == {"llmlab.call_id": "c1"}
    # the old entry serves a new sweep's call: the call is not sent again
    assert store.claim_calls(["c1"], "sw-new") == {"c1"}
