"""``serve`` builds its demand history on the grid of the model it loaded: every shipped model
(wrapped as served: AR blend, online calibration) names its step through its wrappers. The
stop-7 regression: the AR-blend wrapper hid the 300 s model's step, serve fell back to a 60 s
history and every forecast (and ``serve --learn``'s scoring) failed on the step mismatch."""

from __future__ import annotations

import pytest

from wattwheel.adapters.model_artifact import load_forecaster, shipped_model_for_step
from wattwheel.forecast.baselines import PersistenceForecaster
from wattwheel.forecast.conformal import ConformalForecaster

pytest.importorskip("fastapi")  # live_cmds needs the live extra

from wattwheel.cli.live_cmds import _model_step_s


@pytest.mark.parametrize("step_s", [300.0, 10.0, 1.0])
def test_a_shipped_model_as_served_names_its_step(step_s: float) -> None:
    served = load_forecaster(shipped_model_for_step(step_s))
    assert _model_step_s(served) == step_s
    assert _model_step_s(ConformalForecaster(served)) == step_s


def test_a_baseline_has_no_fixed_step() -> None:
    assert _model_step_s(PersistenceForecaster()) is None
    assert _model_step_s(ConformalForecaster(PersistenceForecaster())) is None
