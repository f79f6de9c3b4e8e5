"""Issue #13: human ratings (durable, validated, usable as a score) and prompt versions."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest

import llmlab as ll
from llmlab.errors import ValidationError
from llmlab.history.ratings import rate

ROWS = [{"id": "q1", "question": "Why is the sky blue?"}, {"id": "q2", "question": "What is rain?"}]


def _run(**kw):
    args = {"prompts": ROWS, "template": {"terse": "Answer: {question}", "steps": "Steps: {question}"}}
    args.update(kw)
    return ll.Sweep(temperature=[0.0], max_tokens=6, **args).run(display=False)


def test_rate_is_stored_at_once_and_read_back(home):
    res = _run()
    cid = res.df["call_id"][0]
    rec = res.rate(cid, 1, note="clear")
    assert rec["rating"] == 1 and rec["note"] == "clear"
    row = res.df[res.df["call_id"] == cid].iloc[0]
    assert row["rating"] == 1 and row["rating_note"] == "clear"
    # durable: a fresh connection (another kernel) sees it
    with sqlite3.connect(home / "llmlab.db") as db:
        assert db.execute("SELECT rating, note FROM ratings WHERE call_id=?", (cid,)).fetchone() == (1, "clear")
    res.rate(cid, 4)  # a new rating replaces the old one
    table = ll.ratings()
    assert list(table.columns) == ["call_id", "sweep_id", "rating", "note", "rated_at", "scale"]
    assert len(table) == 1 and table["rating"][0] == 4 and str(table["rated_at"].dt.tz) == "UTC"
    loaded = ll.load(res.sweep_id).df.set_index("call_id")
    assert loaded.loc[cid, "rating"] == 4 and pd.isna(loaded.drop(index=cid)["rating"]).all()
    assert len(ll.ratings(res.sweep_id)) == 1


@pytest.mark.parametrize("bad", [0, 6, 2.5, True, "good"])
def test_bad_ratings_are_refused(bad):
    res = _run()
    with pytest.raises(ValidationError):
        res.rate(res.df["call_id"][0], bad)
    with pytest.raises(ValidationError, match="no such call"):
        res.rate("not-a-call", 1)
    assert ll.ratings().empty


def test_a_rating_of_none_clears_it_in_the_store_and_the_frame():
    res = _run()
    cid = res.df["call_id"][0]
    res.rate(cid, -1, note="wrong")
    res.rate(cid, None)
    assert ll.ratings(res.sweep_id).empty and pd.isna(res.df.set_index("call_id").loc[cid, "rating"])
    assert pd.isna(ll.load(res.sweep_id).df.set_index("call_id").loc[cid, "rating"])


def test_grid_entry_point_resolves_names_and_ratings_are_scores():
    res = _run(name="faq")
    df = res.df
    for cid, tname in zip(df["call_id"], df["template_name"]):
        rate("faq", cid, 5 if tname == "steps" else 2)
    rated = ll.load("faq").df
    summary = ll.summary(rated, by="template_name").set_index("template_name")
    assert summary.loc["steps", "rating"] == 5 and summary.loc["terse", "rating"] == 2
    assert (summary["rated"] == 2).all()
    assert "rating" not in ll.summary(df, by="template_name")  # nothing rated: the usual shape
    cmp = ll.compare(rated, by="template_name", metric="rating")
    assert set(cmp["template_name"]) == {"steps", "terse"}
    fig = ll.charts.pareto(rated, quality="rating")
    assert fig is not None
    ll.expect(rated, min_mean_score={"rating": 3})
    with pytest.raises(ll.CheckFailed):
        ll.expect(rated[rated["template_name"] == "terse"], min_mean_score={"rating": 3})


def test_ratings_travel_with_export_and_import(tmp_path):
    res = _run()
    cid = res.df["call_id"][1]
    res.rate(cid, -1, note="wrong")
    out = ll.history.export_sweep(res.sweep_id, tmp_path / "x.json")
    ll.delete(res.sweep_id, force=True)
    assert ll.ratings().empty
    ll.history.import_sweep(out)
    back = ll.ratings()
    assert list(back["call_id"]) == [cid] and back["note"][0] == "wrong"
    assert ll.load(res.sweep_id).df.set_index("call_id").loc[cid, "rating"] == -1
    assert set(ll.prompt_versions()["name"]) == {"terse", "steps"}


def test_prompt_versions_keep_each_text_once_and_number_changes():
    first = _run()
    _run()  # same texts again: no new version
    versions = ll.prompt_versions()
    assert set(zip(versions["name"], versions["kind"], versions["version"])) == {
        ("terse", "template", 1),
        ("steps", "template", 1),
    }
    terse = ll.prompt_versions("terse")
    assert terse["text"][0] == "Answer: {question}" and len(terse["sweeps"][0]) == 2
    assert terse["sweeps"][0][0] == first.sweep_id
    _run(template={"terse": "Answer in one line: {question}"}, system="Be exact.")
    terse = ll.prompt_versions("terse")
    assert list(terse["version"]) == [1, 2]
    assert terse["text"][1] == "Answer in one line: {question}"
    assert list(ll.prompt_versions("s1")["kind"]) == ["system"]


def test_grid_click_handler_entry_point_in_the_store_layer():
    from llmlab.store.ratings import rate_call

    res = _run()
    cid = res.df["call_id"][2]
    rec = rate_call(res.sweep_id, cid, -1, note="off topic")
    assert rec["rating"] == -1 and rec["sweep_id"] == res.sweep_id
    assert ll.load(res.sweep_id).df.set_index("call_id").loc[cid, "rating_note"] == "off topic"
    with pytest.raises(ValidationError):
        rate_call(res.sweep_id, cid, 3.5)


def test_thumbs_and_stars_are_never_averaged_together():
    res = _run()
    ids = res.df["call_id"].tolist()
    res.rate(ids[0], +1)
    res.rate(ids[1], -1)
    with pytest.raises(ValidationError, match=r"is rated in thumbs \(\+1/-1\), and a rating in stars \(1\.\.5\)"):
        res.rate(ids[2], 4)
    with pytest.raises(ValidationError, match="is rated in thumbs"):
        res.rate(ids[2], stars=1)  # one star, said explicitly, is not a thumb up
    assert ll.summary(res.df, by=[])["rating"].tolist() == [0.0]
    assert ll.ratings(res.sweep_id)["scale"].tolist() == ["thumbs", "thumbs"]
    # a sweep rated in stars: 1 is one star there, and a thumb down is refused
    other = _run()
    oid = other.df["call_id"].tolist()
    other.rate(oid[0], 4)
    assert other.rate(oid[1], 1)["scale"] == "stars"
    with pytest.raises(ValidationError, match=r"is rated in stars \(1\.\.5\)"):
        other.rate(oid[2], -1)
    assert ll.summary(other.df, by=[])["rating"].tolist() == [2.5]
    # re-rating the only rated call may change the scale; clearing frees it
    other.rate(oid[0], None)
    other.rate(oid[1], None)
    assert other.rate(oid[2], -1)["scale"] == "thumbs"
    assert ll.load(other.sweep_id).df["rating"].dropna().tolist() == [-1]
