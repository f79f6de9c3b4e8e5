"""Analysis of call frames: statistics, checks, evaluators, charts, output diffs."""
