"""The store's writes and bytes: a batch of queued writes runs one statement per table, a failing write
still fails alone; call rows are stored compact and read back exactly; a cache entry is the call row that
paid for it (no copy of the response) and keeps its response when that row is rewritten or deleted; span
bytes are packed with a versioned preset dictionary and every older stored form still reads."""

from __future__ import annotations

import json
import sqlite3
import threading
import zlib
from pathlib import Path

import pandas as pd
import pytest

import llmlab as ll
from llmlab import sqlkit
from llmlab.run.rows import CACHE_FIELDS, base_row
from llmlab.store import callrows, experiments, spanbytes
from llmlab.store import database as dbm
from llmlab.store.database import SPAN_RECORD_COLUMNS, Store, get_store
from llmlab.tracing import flush


def _store(tmp_path: Path, monkeypatch=None, statements: list[str] | None = None) -> Store:
    """A store of its own; ``statements`` collects every statement its writer thread runs."""
    if statements is not None:
        real = dbm.connect

        def connect(path: Path) -> sqlite3.Connection:
            db = real(path)
            if threading.current_thread().name == "llmlab-store-writer":
                db.set_trace_callback(statements.append)
            return db

        monkeypatch.setattr(dbm, "connect", connect)
    return Store(tmp_path / "own" / "llmlab.db")


def _hold(store: Store) -> threading.Event:
    """Hold the writer inside a write (so the next ones queue up into one batch); set the event to go on."""
    entered, gate = threading.Event(), threading.Event()
    store.submit(lambda db: (entered.set(), gate.wait(30)))
    assert entered.wait(10)
    return gate


def _row(call_id: str, sweep_id: str = "sw-a", **values) -> dict:
    call = ll.Sweep(prompts=["What is rain?"], models=["local/tiny"], temperature=0.0, max_tokens=8).grid.calls[0]
    row = base_row(call, sweep_id)
    row.update(
        {
            "call_id": call_id,
            "trace_id": "t" * 32,
            "span_id": "s" * 16,
            "service": "llmlab",
            "latency_ms": 12.5,
            "completion": f"answer of {call_id}",
            "finish_reason": "stop",
            "input_tokens": 5,
            "output_tokens": 3,
            "total_tokens": 8,
            "attempts": 1,
        }
    )
    row.update(values)
    return row


def _span_record(i: int) -> tuple:
    rec: list = [None] * len(SPAN_RECORD_COLUMNS)
    names = {"trace_id": f"{i:032x}", "span_id": f"{i:016x}", "start_ns": i, "end_ns": i + 1, "is_llm": 1}
    for name, value in {**names, "row_json": "{}", "attrs_json": "{}", "otlp": b"\n\x00"}.items():
        rec[SPAN_RECORD_COLUMNS.index(name)] = value
    return tuple(rec)


# --- batched writes ---------------------------------------------------------------------------


def test_a_batch_of_finished_calls_runs_a_few_statements_per_table(tmp_path, monkeypatch):
    statements: list[str] = []
    store = _store(tmp_path, monkeypatch, statements)
    gate = _hold(store)
    futures = []
    for i in range(40):
        futures.append(store.put_span_later(lambda i=i: _span_record(i)))
        row = _row(f"c{i}")
        futures.append(store.put_call("sw-a", i, row, callrows.response_of(row)))
    statements.clear()
    gate.set()
    for fut in futures:
        fut.result(30)
    batch = statements[2:]  # after the held write's own RELEASE and COMMIT
    assert statements[:2] == ["RELEASE item", "COMMIT"]
    # BEGIN, INSERTs of 16, 16 and 8 rows into spans, calls and cache each, COMMIT: not a few statements per call
    assert len(batch) == 11, batch
    assert sorted(s.count("),(") + 1 for s in batch if s.startswith("INSERT")) == [8] * 3 + [16] * 6
    assert store.read("SELECT count(*) FROM spans")[0][0] == 40 and len(store.call_rows("sw-a")) == 40
    assert len(store.cached_responses(f"c{i}" for i in range(40))) == 40
    store.close()


def test_batches_of_every_size_share_a_few_statement_shapes(tmp_path, monkeypatch):
    """Each distinct statement text is a prepared statement the connection caches: batches of 1 to 60 calls
    must not make one multi-row INSERT shape per size."""
    statements: list[str] = []
    store = _store(tmp_path, monkeypatch, statements)
    for size in range(1, 61):
        gate = _hold(store)
        futures = [store.put_call("sw-a", size * 100 + i, _row(f"c{size}-{i}"), None) for i in range(size)]
        gate.set()
        for fut in futures:
            fut.result(30)
    # the trace shows the values bound: a statement's shape is its number of rows
    shapes = {s.count("('sw-a',") for s in statements if s.startswith("INSERT OR REPLACE INTO calls")}
    assert shapes <= set(sqlkit.STATEMENT_ROWS), shapes
    assert len(store.call_rows("sw-a")) == sum(range(1, 61))
    store.close()


def test_one_bad_write_in_a_batch_fails_alone(tmp_path):
    store = _store(tmp_path)
    gate = _hold(store)
    good = [store.put_call("sw-a", i, _row(f"c{i}"), None) for i in range(3)]
    bad = store.put_call("sw-a", 3, _row("c3", status=None), None)  # calls.status is NOT NULL
    broken_span = store.put_spans([(1, 2, 3)])  # not a span record
    seen = []
    read = store.submit(lambda db: seen.append(db.execute("SELECT count(*) FROM calls").fetchone()[0]))
    more = [store.put_call("sw-a", 4 + i, _row(f"d{i}"), None) for i in range(2)]
    gate.set()
    for fut in good + more + [read]:
        fut.result(30)
    with pytest.raises(sqlite3.Error):
        bad.result(30)
    with pytest.raises(sqlite3.Error):
        broken_span.result(30)
    assert seen == [3]  # a plain write between Rows writes runs in queue order
    assert [r["call_id"] for r in store.call_rows("sw-a")] == ["c0", "c1", "c2", "d0", "d1"]
    # a batch of nothing but rows (no savepoint at all) that fails: the others are written all the same
    gate = _hold(store)
    spans = [store.put_span_later(lambda i=i: _span_record(i)) for i in range(3)]
    bad = store.put_call("sw-b", 0, _row("e0", sweep_id="sw-b", status=None), None)
    good = [store.put_call("sw-b", 1 + i, _row(f"e{1 + i}", sweep_id="sw-b"), None) for i in range(2)]
    gate.set()
    for fut in spans + good:
        fut.result(30)
    with pytest.raises(sqlite3.Error):
        bad.result(30)
    assert [r["call_id"] for r in store.call_rows("sw-b")] == ["e1", "e2"]
    assert store.read("SELECT count(*) FROM spans")[0][0] == 3
    store.close()


def test_more_rows_than_sqlite_takes_parameters_for_in_one_statement_still_land(tmp_path):
    store = _store(tmp_path)
    records = [_span_record(i) for i in range(1000)]  # 1000 × 41 values: over SQLite's 32,766
    store.put_spans(records).result(30)
    assert store.read("SELECT count(*) FROM spans")[0][0] == 1000
    store.close()


def test_a_finished_call_ends_the_claim_this_process_made(tmp_path):
    store = _store(tmp_path)
    assert store.claim_calls(["c1", "c2"], "sw-a") == set()
    store.put_call("sw-a", 0, _row("c1"), None).result(30)
    assert [r[0] for r in store.read("SELECT call_id FROM call_claims")] == ["c2"]
    store.release_claims("sw-a")
    assert store.read("SELECT count(*) FROM call_claims")[0][0] == 0
    store.close()


# --- compact call rows ------------------------------------------------------------------------


def test_call_rows_are_stored_compact_and_come_back_exactly():
    res = ll.Sweep(
        prompts=pd.DataFrame({"id": ["a", "b"], "q": ["What is rain?", "Why is snow white?"], "topic": ["w", None]}),
        template={"terse": "Answer: {q}", "long": "Answer at length: {q}"},
        models=["local/tiny"],
        temperature=[0.0, 0.5],
        max_tokens=6,
        params={"presence_penalty": [0.0]},
    ).run(display=False)
    store = get_store()
    stored = store.read("SELECT row_json, fmt FROM calls WHERE sweep_id=?", (res.sweep_id,))
    assert len(stored) == 8 and {fmt for _, fmt in stored} == {callrows.COMPACT}
    for row_json, _ in stored:  # the columns' values and the defaults are not repeated
        assert not {"sweep_id", "call_id", "status", "cached", "error", "seed"} & set(json.loads(row_json))
    pd.testing.assert_frame_equal(ll.load(res.sweep_id).df, res.df)
    # an export holds whole rows, as every llmlab reads them
    exported = [json.loads(r["row_json"]) for r in experiments.export_rows(store, res.sweep_id)["calls"]]
    assert exported == store.call_rows(res.sweep_id)
    assert {"sweep_id", "call_id", "status", "cached"} <= set(exported[0])


def test_compact_rows_keep_keys_values_types_and_order():
    row = _row("c1", seed=0, repeat=0, attempts=0, tokens_estimated=0, cached=True, spent_usd=0.0, error="")
    row["presence_penalty"], row["topic"], row["data.model"] = 0.5, None, "x"
    for sweep_id in ("sw-a", "sw-other"):  # a row whose sweep_id is not its column's keeps it
        row_json, fmt = callrows.pack_row(row, sweep_id, row["status"])
        back = callrows.unpack_row(row_json, fmt, sweep_id, "c1", row["status"])
        assert fmt == callrows.COMPACT and list(back.items()) == list(json.loads(json.dumps(row)).items())
        assert [type(v) for v in back.values()] == [type(v) for v in json.loads(json.dumps(row)).values()]
    # a row not built by the runner (keys missing, or in another order) is stored whole
    for odd in ({"call_id": "c1", "status": "ok"}, dict(reversed(list(row.items())))):
        row_json, fmt = callrows.pack_row(odd, "sw-a", "ok")
        assert fmt is None and callrows.unpack_row(row_json, fmt, "sw-a", "c1", "ok") == odd
    with pytest.raises(ValueError, match="newer llmlab"):
        callrows.unpack_row("{}", 7, "sw-a", "c1", "ok")


# --- the cache entry is the call row ----------------------------------------------------------


def test_the_cache_holds_no_copy_of_the_response_and_a_rerun_is_served_from_it():
    prompts = ["What is a rainbow?", "Why is the sky blue?"]
    first = ll.Sweep(prompts=prompts, models=["local/tiny"], temperature=0.0, max_tokens=8).run(display=False)
    store = get_store()
    entries = store.read("SELECT call_id, response_json, sweep_id FROM cache")
    assert len(entries) == 2 and all(rj is None and sid == first.sweep_id for _, rj, sid in entries)
    (cache_bytes,) = store.read("SELECT sum(length(call_id) + length(model) + length(created_at) + 30) FROM cache")[0]
    assert cache_bytes < 150 * len(entries)  # the key and a reference, not the completion and its figures
    again = ll.Sweep(prompts=prompts, models=["local/tiny"], temperature=0.0, max_tokens=8).run(display=False)
    assert again.df["cached"].all()
    cols = [c for c in CACHE_FIELDS if c in again.df.columns]
    pd.testing.assert_frame_equal(again.df[cols], first.df[cols])


def test_a_rewritten_call_row_does_not_change_the_cached_response(tmp_path):
    store = _store(tmp_path)
    ok = _row("c1")
    store.put_call("sw-a", 0, ok, callrows.response_of(ok)).result(30)
    store.put_call("sw-a", 0, dict(ok, cached=True, spent_usd=0.0), None).result(30)  # the same answer
    assert store.read("SELECT response_json, sweep_id FROM cache") == [(None, "sw-a")]
    # the same sweep id sends the call again and it fails: the entry keeps the answer it had
    failed = _row("c1", status="error", error="boom", completion=None, finish_reason=None)
    store.put_call("sw-a", 0, failed, None).result(30)
    assert store.cached_responses(["c1"]) == {"c1": callrows.response_of(ok)}
    assert store.read("SELECT sweep_id FROM cache") == [(None,)]
    # an entry that is not the row's own response is stored as given
    other = dict(callrows.response_of(ok), completion="something else")
    store.put_call("sw-b", 0, _row("c2", sweep_id="sw-b"), other).result(30)
    assert store.cached_responses(["c2"]) == {"c2": other}
    store.close()


def test_deleting_the_sweep_that_paid_keeps_the_entries_other_sweeps_use():
    prompts = ["What is a rainbow?", "Why is the sky blue?"]
    first = ll.Sweep(prompts=prompts, models=["local/tiny"], temperature=0.0, max_tokens=8).run(display=False)
    rerun = ll.Sweep(prompts=prompts[:1], models=["local/tiny"], temperature=0.0, max_tokens=8).run(display=False)
    store = get_store()
    before = store.cached_responses(first.df["call_id"])
    ll.delete(first.sweep_id)
    shared = rerun.df["call_id"].iloc[0]
    assert store.cached_responses(first.df["call_id"]) == {shared: before[shared]}
    # the entry now is rerun's row (it holds the same answer)
    assert store.read("SELECT response_json, sweep_id FROM cache") == [(None, rerun.sweep_id)]
    ll.delete(rerun.sweep_id, keep_cache=True)  # nobody's row any more: the entry keeps its response
    assert store.cached_responses([shared]) == {shared: before[shared]}
    assert store.read("SELECT sweep_id FROM cache") == [(None,)]


def test_an_entry_whose_other_row_lacks_the_text_gets_its_response_written_in(tmp_path):
    store = _store(tmp_path)
    ok = _row("c1")
    store.put_call("sw-a", 0, ok, callrows.response_of(ok)).result(30)
    store.put_call("sw-b", 0, _row("c1", sweep_id="sw-b", completion=None, cached=True), None).result(30)
    experiments.delete_experiments(store, ["sw-a"])  # sw-b's row lacks the completion: not the same answer
    assert store.cached_responses(["c1"]) == {"c1": callrows.response_of(ok)}
    assert store.read("SELECT sweep_id FROM cache") == [(None,)]
    store.close()


# --- span bytes -------------------------------------------------------------------------------


def test_span_bytes_are_packed_with_a_versioned_dictionary_and_every_older_form_reads():
    res = ll.Sweep(prompts=["What is rain?"], models=["local/tiny"], max_tokens=8).run(display=False, cache=False)
    flush()
    (stored,) = get_store().read("SELECT otlp FROM spans WHERE span_id=?", (res.df["span_id"].iloc[0],))[0]
    plain = spanbytes.unpack(stored)
    assert stored[:2] == b"\x78\xbb" and int.from_bytes(stored[2:6], "big") == spanbytes.DICTIONARY_V1_ID
    assert len(stored) < 0.7 * len(zlib.compress(plain, 6))  # the dictionary pays
    # released dictionaries are never edited: rows packed with them need their exact bytes
    assert zlib.adler32(spanbytes.DICTIONARIES[spanbytes.DICTIONARY_V1_ID]) == spanbytes.DICTIONARY_V1_ID
    assert spanbytes.PACK_DICTIONARY is spanbytes.DICTIONARIES[spanbytes.DICTIONARY_V1_ID]
    for older in (plain, zlib.compress(plain, 6)):  # rows of older homes: plain protobuf, zlib without dictionary
        assert spanbytes.unpack(older) == plain
    other = zlib.compressobj(6, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, b"a future dictionary")
    with pytest.raises(zlib.error, match="unknown dictionary"):
        spanbytes.unpack(other.compress(plain) + other.flush())
    with pytest.raises(zlib.error):
        spanbytes.unpack(stored[:-8])
