"""Experiment history: every sweep run is a tracked experiment that can be listed, reloaded,
tagged, compared, diffed, deleted, exported and imported — from the local store, with no server.

Why here and not in the runner: the runner only hands over what it knows (spec, rows, timings)
through ``start_experiment``/``finish_experiment`` (:mod:`llmlab.run.provenance`); everything a data
scientist does with past runs afterwards reads the store (``home/llmlab.db``), so it works from any process or kernel
sharing that home, and on homes written by older llmlab versions (their sweeps get their totals
back-filled by migration ``m002_experiments``).

What is recorded per experiment: id, name, start/end time, wall time, the full spec (prompt-set
fingerprint and a copy of small prompt sets, template, system message, grid, parameters), where
it ran from (notebook path or script, kernel id), git commit/branch/dirty flag of the working
directory, llmlab/openai/OpenLLMetry versions and the provider endpoints, call counts (ok, errors,
cached, skipped), tokens, cost, user tags and a note.

Where things are: :mod:`llmlab.history.catalog` (sweeps, record, load, tags, note, delete),
:mod:`llmlab.history.compare` (compare_sweeps, diff), :mod:`llmlab.history.archive` (export/import);
the SQL behind them is :mod:`llmlab.store.experiments`, the recording :mod:`llmlab.run.provenance`.

Deleting and the response cache: the cache is keyed by ``call_id`` (the request), not by sweep.
``delete()`` removes a sweep's calls, tags and spans, and the cache entries of its calls that no
other sweep in the home has a call for; entries another sweep shares stay, as do spans another
sweep's cached rows point at. ``keep_cache=True`` keeps every cache entry (a re-run is then free).
Copies of spans already exported to DataKit (or the embedded collector) are not touched.
"""

from __future__ import annotations

from llmlab.history.archive import export_sweep, import_sweep
from llmlab.history.catalog import delete, load, note_sweep, record, sweeps, tag_sweep, untag_sweep
from llmlab.history.compare import SweepComparison, SweepDiff, compare_sweeps, diff
from llmlab.history.ratings import prompt_versions, rate, ratings

# the recording half sits below the results, in the runner's stage; still importable from here, as it always was
from llmlab.run.provenance import experiment_context, finish_experiment, start_experiment

__all__ = [
    "SweepComparison",
    "SweepDiff",
    "compare_sweeps",
    "delete",
    "diff",
    "experiment_context",
    "export_sweep",
    "finish_experiment",
    "import_sweep",
    "load",
    "note_sweep",
    "prompt_versions",
    "rate",
    "ratings",
    "record",
    "start_experiment",
    "sweeps",
    "tag_sweep",
    "untag_sweep",
]
