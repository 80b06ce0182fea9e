"""Promotion, rollback and drift rules of continuous learning (hand-checkable cases)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wattwheel.forecast.backtest import BacktestRun
from wattwheel.forecast.online import (
    LearningRules,
    Lineup,
    Scoreboard,
    drift_check,
    first_horizon_errors,
    offer,
    step,
)

RULES = LearningRules(margin=0.05, min_origins=10, window=50, max_shadow_origins=40)


def _board(**errors: list[float]) -> Scoreboard:
    board = Scoreboard()
    for version, errs in errors.items():
        board.add(version, [float(i) for i in range(len(errs))], errs)
    return board


def test_a_shadow_better_by_the_margin_on_enough_origins_is_promoted() -> None:
    board = _board(live=[10.0] * 10, shadow=[9.0] * 10)
    lineup, verdict = step(Lineup("live", "shadow"), board, RULES, now_s=100.0)
    assert verdict is not None and verdict.transition == "promote"
    assert lineup == Lineup("shadow", None, "live", 100.0)
    assert verdict.comparison.n_origins == 10
    assert verdict.comparison.gain == pytest.approx(0.1)


def test_too_few_origins_or_too_small_a_gain_keeps_the_live_model() -> None:
    few = _board(live=[10.0] * 9, shadow=[1.0] * 9)
    assert step(Lineup("live", "shadow"), few, RULES, 0.0) == (Lineup("live", "shadow"), None)
    small = _board(live=[10.0] * 20, shadow=[9.6] * 20)  # 4 % < 5 %
    assert step(Lineup("live", "shadow"), small, RULES, 0.0) == (Lineup("live", "shadow"), None)


def test_only_common_origins_count() -> None:
    board = Scoreboard()
    board.add("live", range(20), [10.0] * 20)
    board.add("shadow", range(15, 25), [1.0] * 10)  # 5 common origins only
    assert board.compare("live", "shadow", 50).n_origins == 5
    assert step(Lineup("live", "shadow"), board, RULES, 0.0)[1] is None


def test_the_window_keeps_the_most_recent_common_origins() -> None:
    board = _board(live=[10.0] * 100, shadow=[1.0] * 50 + [10.0] * 50)
    cmp = board.compare("live", "shadow", window=50)
    assert (cmp.n_origins, cmp.mae_a, cmp.mae_b) == (50, 10.0, 10.0)


def test_a_shadow_that_never_earns_promotion_is_rejected() -> None:
    board = _board(live=[10.0] * 40, shadow=[10.0] * 40)
    lineup, verdict = step(Lineup("live", "shadow"), board, RULES, 0.0)
    assert verdict is not None and verdict.transition == "reject"
    assert lineup == Lineup("live")


def test_a_promoted_model_worse_than_its_predecessor_since_promotion_is_rolled_back() -> None:
    board = Scoreboard()
    # Before the promotion (origins < 100) the new model was better; since then it is worse.
    board.add("old", range(100, 120), [10.0] * 20)
    board.add("new", range(100, 120), [11.0] * 20)
    board.add("new", range(0, 100), [1.0] * 100)
    board.add("old", range(0, 100), [10.0] * 100)
    lineup = Lineup("new", None, "old", promoted_at_s=100.0)
    after, verdict = step(lineup, board, RULES, 200.0)
    assert verdict is not None and verdict.transition == "rollback"
    assert verdict.version == "new" and verdict.against == "old"
    assert after == Lineup("old")


def test_a_live_model_worse_than_the_shipped_anchor_goes_back_to_it() -> None:
    board = Scoreboard()
    # v2 beats its predecessor v1 (no predecessor rollback), but both drifted above v0
    board.add("v0", range(100, 130), [10.0] * 30)
    board.add("v1", range(100, 130), [12.0] * 30)
    board.add("v2", range(100, 130), [11.0] * 30)
    lineup = Lineup("v2", "v3", "v1", promoted_at_s=100.0, anchor="v0")
    after, verdict = step(lineup, board, RULES, 200.0)
    assert verdict is not None and verdict.transition == "rollback"
    assert (verdict.version, verdict.against) == ("v2", "v0")
    assert "shipped" in verdict.reason
    assert after == Lineup("v0", "v3", None, 200.0, "v0")
    # the anchor itself live: nothing to compare
    assert step(Lineup("v0", anchor="v0"), board, RULES, 300.0) == (Lineup("v0", anchor="v0"), None)


def test_promotion_and_rollback_keep_the_anchor() -> None:
    board = _board(v0=[10.0] * 10, v1=[9.0] * 10)
    promoted, _ = step(Lineup("v0", "v1", anchor="v0"), board, RULES, 5.0)
    assert promoted.anchor == "v0"


def test_no_rollback_while_the_promoted_model_holds_up() -> None:
    board = _board(old=[10.0] * 30, new=[10.1] * 30)  # 1 % worse: within the margin
    lineup = Lineup("new", None, "old", promoted_at_s=0.0)
    assert step(lineup, board, RULES, 50.0) == (lineup, None)


def test_offer_puts_a_candidate_on_trial() -> None:
    assert offer(Lineup("v1", None, "v0", 5.0), "v2") == Lineup("v1", "v2", "v0", 5.0)


def test_nan_errors_score_no_model_and_trim_bounds_memory() -> None:
    board = Scoreboard()
    board.add("a", [0.0, 1.0, 2.0], [1.0, math.nan, 3.0])
    assert board.count("a") == 2
    board.trim(1)
    assert board.errors["a"] == {2.0: 3.0}
    assert board.mae("a", 0.0, 10.0) == 3.0
    assert math.isnan(board.mae("a", 5.0, 10.0))


def test_drift_flags_a_miss_rate_far_from_nominal_only_with_a_full_window() -> None:
    rules = LearningRules(min_origins=1, drift_window=100, drift_z=3.0)
    assert not drift_check([0.1] * 100, rules).drift
    assert not drift_check([1.0] * 99, rules).drift  # window not full yet
    high = drift_check([0.0] * 70 + [1.0] * 30, rules)  # 30 % misses: z = 6.67
    assert high.drift and high.miss_rate == pytest.approx(0.3)
    assert high.z == pytest.approx(20 / 3)
    assert drift_check([0.0] * 100, rules).drift  # no miss at all: intervals too wide, z -3.33


def test_first_horizon_errors_average_series_and_count_misses() -> None:
    values = np.zeros((2, 2, 1, 3))
    values[..., 0], values[..., 1], values[..., 2] = -1.0, 0.0, 1.0
    run = BacktestRun(
        origins=np.array([0, 1]),
        quantiles=(0.05, 0.5, 0.95),
        values=values,
        point=np.zeros((2, 2, 1)),
        actual=np.array([[[0.5], [2.0]], [[np.nan], [-0.5]]]),
    )
    err, miss = first_horizon_errors(run)
    assert err.tolist() == [1.25, 0.5]
    assert miss.tolist() == [0.5, 0.0]


def test_rules_reject_bad_settings() -> None:
    with pytest.raises(ValueError, match="margin"):
        LearningRules(margin=1.5)
    with pytest.raises(ValueError, match="window"):
        LearningRules(min_origins=10, window=5)
