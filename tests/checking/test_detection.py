"""Detection quality, measured: the default pack on the labelled scenario suite.

Every faulty scenario must be caught at error severity on the fault's tensors
within one record of the fault becoming visible (with the scenario's declared
intent where the fault cannot be seen without it), and no healthy scenario may
fail.  ``benchmarks/detection.py`` prints the same figures as a table.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import detection  # noqa: E402
import scenarios as sc  # noqa: E402


def _param(s):
    marks = () if s.fast else (pytest.mark.slow,)
    return pytest.param(s, id=s.name, marks=marks)


@pytest.mark.parametrize("s", [_param(s) for s in sc.SCENARIOS])
def test_default_pack_judges_scenario(s, built):
    outcome = detection.score(s, built(s))
    if s.healthy:
        assert not outcome.false_failure, f"false failure: {outcome.detail}"
    else:
        assert outcome.caught, (f"{s.name} ({s.fault_class}) not caught within "
                                f"{detection.MAX_LATENCY} record(s): first error on the fault was "
                                f"{outcome.rule or 'none'} at latency {outcome.latency}")


@pytest.mark.parametrize("s", [_param(s) for s in sc.SCENARIOS if s.intent], )
def test_intent_is_needed_for_intent_scenarios(s, built):
    """The intent scenarios are honest: the default pack alone does not see them."""
    no_intent = sc.Scenario(**{**s.__dict__, "intent": None})
    assert not detection.score(no_intent, built(s)).caught


def test_summary_figures():
    outcomes = [detection.Outcome("a", False, "nan", False, "fail", "r", "t", 0, True),
                detection.Outcome("b", False, "nan", True, "fail", "r", "t", 1, True),
                detection.Outcome("c", True, "healthy", False, "fail", false_failure=True),
                detection.Outcome("d", False, "oscillation", False, "pass")]
    s = detection.summarize(outcomes)
    assert s["recall"] == {"nan": (2, 2), "oscillation": (0, 1)}
    assert s["recall_intent_free"] == (1, 2) and s["false_failures"] == 1 and s["median_latency"] == 0.5
    assert "MISS" in detection.render(outcomes, s)
