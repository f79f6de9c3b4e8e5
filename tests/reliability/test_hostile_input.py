"""Hostile input (#16): what the bad-input table cannot show.

The table in ``test_bad_input.py`` pins the refusals (each names its input, sends nothing, harms nothing). Here:
the same refusals end to end (a NaN budget on a priced sweep, ``llmlab sweep`` on a hostile spec prints one
``Error:`` line), that the caps leave room for real work (long documents, anchors, format specs, numpy numbers),
and that a refusal is fast (a plan is measured before it is built).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

import llmlab as ll
from llmlab.cli import main
from llmlab.cli.specfile import load_spec
from llmlab.errors import ValidationError
from llmlab.plan.grid import MAX_PLAN_CALLS
from llmlab.plan.prompts import MAX_FIELD_CHARS
from tests.reliability.conftest import price_fault_models


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _sweep(**kw: object) -> ll.Sweep:
    args = {"prompts": ["What is rain?"], "models": ["local/tiny"], "temperature": 0.0, "max_tokens": 4, **kw}
    return ll.Sweep(**args)  # type: ignore[arg-type]


def test_a_nan_budget_on_a_priced_sweep_is_refused_before_anything_is_spent(fault, home, tmp_path, capsys):
    # a NaN budget compares false with every spend, so it used to be accepted and never stop anything
    price_fault_models(home, tiny=(1.0, 1000.0))
    sweep = ll.Sweep(
        prompts=[f"What is rain, part {i}?" for i in range(10)], models=["fault/tiny"], temperature=0.0, max_tokens=20
    )
    for budget in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValidationError, match=r"budget_usd=-?(nan|inf): must be a non-negative number"):
            sweep.run(display=False, budget_usd=budget)
    assert fault.stats()["requests"] == 0

    spec = tmp_path / "nan.yaml"
    spec.write_text(
        "prompts: ['What is rain?', 'What is snow?']\nmodels: [fault/tiny]\ntemperature: 0.0\nmax_tokens: 20\n"
        "run: {budget_usd: .nan}\n"
    )
    code, _, err = _cli(capsys, "sweep", str(spec), "--home", str(home), "--no-progress")
    assert code == 1 and err.startswith("Error: nan.yaml: run.budget_usd=nan: must be a non-negative number")
    assert "Traceback" not in err and fault.stats()["requests"] == 0


def test_long_documents_are_prompts_up_to_the_field_cap(tmp_path):
    # csv's default field limit is 131,072 characters: a long document used to raise a raw _csv.Error
    doc = "All work and no play. " * 20_000  # 440,000 characters
    csv_path = tmp_path / "docs.csv"
    csv_path.write_text('text,label\n"' + doc + '",long\nshort doc,short\n')
    sweep = ll.Sweep(prompts=csv_path, template="Summarize: {text}", models=["local/tiny"], temperature=0.0)
    assert [len(c.prompt) for c in sweep.calls] == [len("Summarize: ") + len(doc), len("Summarize: short doc")]

    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text('{"prompt": "' + doc + '"}\n')
    assert ll.Sweep(prompts=jsonl, models=["local/tiny"], temperature=0.0).calls[0].prompt == doc
    assert MAX_FIELD_CHARS == 16 * 1024 * 1024


def test_cli_sweep_on_an_over_long_csv_field_prints_one_error_line(tmp_path, capsys):
    (tmp_path / "p.csv").write_text("prompt\nrain\n" + "x" * (MAX_FIELD_CHARS + 10) + "\n")
    (tmp_path / "spec.yaml").write_text("prompts: p.csv\nmodels: [local/tiny]\n")
    code, _, err = _cli(capsys, "sweep", str(tmp_path / "spec.yaml"), "--home", str(tmp_path / "h"))
    assert code == 1 and "Traceback" not in err and len(err.splitlines()) == 1
    assert "p.csv:3': a field is longer than 16,777,216 characters" in err


def test_a_plan_too_big_is_refused_at_once_without_building_it():
    started = time.perf_counter()
    with pytest.raises(ValidationError, match=r"calls=1000000000: the sweep would make 1,000,000,000 calls"):
        _sweep(repeats=10**9)  # used to run ~66 s into a MemoryError
    with pytest.raises(ValidationError, match=rf"{MAX_PLAN_CALLS + 1:,} calls"):
        _sweep(repeats=MAX_PLAN_CALLS + 1)
    assert time.perf_counter() - started < 2.0
    assert len(_sweep(repeats=1000)) == 1000  # a big but sane grid is fine


def test_yaml_anchors_and_aliases_within_the_cap_still_work(tmp_path):
    spec = tmp_path / "anchors.yaml"
    spec.write_text(
        "prompts: &p ['What is rain?', 'What is snow?']\nmodels: [local/tiny]\ntemperature: &t [0.0, 0.5]\n"
        "top_p: 1.0\nmax_tokens: 4\nparams: {presence_penalty: *t}\nname: anchors\n"
    )
    assert len(load_spec(spec).sweep.calls) == 2 * 2 * 2


def test_template_format_specs_and_conversions_that_work_are_kept():
    sweep = ll.Sweep(
        prompts=[{"n": 7, "q": "rain"}],
        template="#{n:03d} {q!r} [{q:>6}] {{literal}}",
        models=["local/tiny"],
        temperature=0.0,
    )
    assert sweep.calls[0].prompt == "#007 'rain' [  rain] {literal}"


def test_numpy_numbers_are_settings_with_the_same_call_ids():
    plain = ll.Sweep(prompts=["rain"], models=["local/tiny"], temperature=0.5, max_tokens=5, seed=3)
    numpy = ll.Sweep(
        prompts=["rain"], models=["local/tiny"], temperature=np.float32(0.5), max_tokens=np.int64(5), seed=np.int64(3)
    )
    assert [c.call_id for c in numpy.calls] == [c.call_id for c in plain.calls]


def test_an_unexpected_exception_in_a_cli_command_is_one_error_line(tmp_path, capsys, monkeypatch):
    import llmlab.cli.specfile as specfile

    def broken(path: Path) -> None:
        raise RuntimeError("something nobody checked")

    monkeypatch.setattr(specfile, "load_spec", broken)
    (tmp_path / "spec.yaml").write_text("prompts: [a]\n")
    code, _, err = _cli(capsys, "sweep", str(tmp_path / "spec.yaml"), "--home", str(tmp_path / "h"))
    assert code == 1 and "Traceback" not in err
    assert err.startswith("Error: unexpected RuntimeError: something nobody checked (LLMLAB_DEBUG=1 shows")


@pytest.mark.parametrize("since", ["nan", "NaT", "", "1e400", "99999-01-01"])
def test_spans_since_values_that_are_no_time_are_refused(tmp_path, capsys, since):
    code, _, err = _cli(capsys, "spans", "--since", since, "--home", str(tmp_path / "h"))
    assert code == 1 and err.startswith(f"Error: since='{since}': expected a datetime")  # 'nan' used to mean "all"


@pytest.mark.parametrize("since", [float("nan"), float("inf"), 10**400, 1e20])
def test_ll_spans_refuses_non_finite_or_out_of_range_times(since):
    with pytest.raises(ll.ConfigError, match=r"since=.*a finite time"):
        ll.spans(since=since, source="local")


@pytest.mark.parametrize("command", [["demo", "--delay-ms", "inf"], ["serve-model", "--delay-ms", "nan"]])
def test_a_non_finite_local_model_delay_is_refused(tmp_path, capsys, command):
    # an infinite per-token delay used to hang every call until the client's timeout, then retry it
    code, out, err = _cli(
        capsys,
        *command,
        *(["--home", str(tmp_path / "h"), "--out", str(tmp_path / "o")] if command[0] == "demo" else []),
    )
    assert code == 1 and "must be a non-negative, finite number of milliseconds" in err and "server on" not in out


def test_an_infinite_delay_in_the_environment_is_no_delay(monkeypatch):
    monkeypatch.setenv("LLMLAB_LOCAL_DELAY_MS", "inf")
    started = time.perf_counter()
    res = ll.Sweep(prompts=["What is rain?"], models=["local/tiny"], temperature=0.0, max_tokens=2).run(display=False)
    assert (res.df["status"] == "ok").all() and time.perf_counter() - started < 20
