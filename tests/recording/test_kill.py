"""A slice of the kill -9 harness (tests/reliability.py): a recording child SIGKILLed at random
moments leaves a run that checks with no problem and that a new writer continues.
``python benchmarks/reliability.py`` runs the full count."""

from __future__ import annotations

import random

import reliability


def test_runs_killed_at_random_points_are_checkable_and_continuable(tmp_path):
    seed = random.randrange(10 ** 6)
    out = reliability.kill_nine(tmp_path, points=3, seed=seed)
    assert out["failures"] == [], f"seed {seed}: {out['failures']}"
    assert out["checkable"] == out["continuable"] == out["kill_points"] == 3
