"""The pure world model (DESIGN §8): one reserve machine, deferral debt, shift orders.
Hand-computed cases; the plant, the runtime ledger and the emulator all run on these."""

from __future__ import annotations

import numpy as np
import pytest

from wattwheel.domain.debt import DebtBook
from wattwheel.domain.reserve import (
    RESERVE_OFF,
    RESERVE_ON,
    RESERVE_STARTING,
    RESERVE_WARM,
    ReserveMachine,
)
from wattwheel.domain.shifts import ShiftBook, ShiftOrder, pair_levels


def machine(warm_delay: float | None = None) -> ReserveMachine:
    return ReserveMachine(
        2, 50.0, start_delay_s=60.0, min_on_s=300.0, warm_start_delay_s=warm_delay
    )


def test_one_machine_starts_once_for_two_domains() -> None:
    m = machine()
    m.command(0.0, 0, True, 20.0)
    m.command(10.0, 1, True, 20.0)  # already starting: no second start
    assert m.starts == 1 and m.mode == RESERVE_STARTING
    np.testing.assert_allclose(m.domain_starts, [1.0, 0.0])
    m.advance(60.0)
    assert m.mode == RESERVE_ON
    # Released by both at 100 s, but the minimum on-time holds it until 300 s after the start.
    m.command(100.0, 0, False, 0.0)
    m.command(100.0, 1, False, 0.0)
    assert m.mode == RESERVE_ON and m.view(100.0).min_on_left_s[0] == pytest.approx(200.0)
    m.command(300.0, 0, False, 0.0)
    assert m.mode == RESERVE_OFF
    assert m.running_s == pytest.approx(300.0)
    # Shares add up to the machine: A alone 0..10 s, both 10..100 s, A (its starter) after.
    assert m.domain_running_s.sum() == pytest.approx(300.0)
    assert m.domain_running_s[1] == pytest.approx(45.0)


def test_delivery_is_shared_within_capacity() -> None:
    m = machine()
    m.command_all(0.0, np.array([True, True]), np.array([40.0, 60.0]))
    m.advance(60.0)
    np.testing.assert_allclose(m.delivery_kw(np.array([100.0, 100.0])), [20.0, 30.0])
    np.testing.assert_allclose(
        m.delivery_kw(np.array([10.0, 100.0])), [10.0 * 50 / 70, 60.0 * 50 / 70]
    )


def test_pre_warm_is_not_a_start_and_shortens_the_next_one() -> None:
    m = machine(warm_delay=10.0)
    m.command(0.0, 0, False, 0.0, warm=True)
    assert m.mode == RESERVE_WARM and m.starts == 0
    m.command(100.0, 0, True, 30.0, warm=True)
    assert m.starts == 1 and m.view(100.0).ready_in_s[0] == pytest.approx(10.0)
    assert m.warm_s == pytest.approx(100.0)
    assert m.on_fraction(100.0, 60.0) == pytest.approx(50.0 / 60.0)
    # Without a warm start delay the site cannot pre-warm faster: the full delay applies.
    cold = machine()
    cold.command(0.0, 0, False, 0.0, warm=True)
    cold.command(100.0, 0, True, 30.0)
    assert cold.view(100.0).ready_in_s[0] == pytest.approx(60.0)


def test_debt_is_forced_at_its_deadline_and_repaid_oldest_first() -> None:
    book = DebtBook(np.array([600.0, 120.0]))
    # 6 kW deferred for 60 s in A = 0.1 kWh due at 600 s; 3 kW in B = 0.05 kWh due at 120 s.
    assert book.settle(0.0, 60.0, np.array([6.0, 3.0]), np.zeros(2)) == pytest.approx([0, 0])
    np.testing.assert_allclose(book.owed_kwh(), [0.1, 0.05])
    np.testing.assert_allclose(book.due_kw(120.0, 60.0), [0.0, 3.0])
    repaid = book.settle(120.0, 60.0, np.zeros(2), np.array([2.0, 0.0]))
    np.testing.assert_allclose(repaid, [2.0, 3.0])  # B forced, A voluntary
    np.testing.assert_allclose(book.owed_kwh(), [0.1 - 2.0 / 60.0, 0.0])


def test_a_pair_order_replaces_the_last_from_its_start() -> None:
    book = ShiftBook(2)
    assert book.place(ShiftOrder(0, 1, 20.0, 100.0, 400.0, revision=1))
    assert book.place(ShiftOrder(0, 1, 5.0, 200.0, 500.0, revision=2))
    # 20 kW until 200 s, then 5 kW - never 25.
    assert book.levels(150.0)[0][0] == pytest.approx(20.0)
    assert book.levels(250.0)[0][0] == pytest.approx(5.0)
    assert book.levels(250.0)[1][1] == pytest.approx(5.0)
    # A duplicate or older revision changes nothing; a 0 kW order ends the shift.
    assert not book.place(ShiftOrder(0, 1, 50.0, 200.0, 500.0, revision=2))
    assert book.place(ShiftOrder(0, 1, 0.0, 300.0, 600.0, revision=3))
    assert book.levels(350.0)[0][0] == 0.0


def test_orders_are_due_on_change_renewal_and_end() -> None:
    book = ShiftBook(2)
    levels = pair_levels(np.array([10.0, 0.0]), np.array([0.0, 10.0]))
    first = book.orders_due(0.0, levels, lead_s=60.0, period_s=300.0)
    assert [(o.pair, o.kw, o.start_s, o.end_s) for o in first] == [((0, 1), 10.0, 60.0, 360.0)]
    for o in first:
        book.place(o)
    assert book.orders_due(1.0, levels, 60.0, 300.0) == []  # same level: nothing to send
    assert len(book.orders_due(160.0, levels, 60.0, 300.0)) == 1  # < half a period left: renew
    ended = book.orders_due(2.0, {}, 60.0, 300.0)
    assert [(o.pair, o.kw) for o in ended] == [((0, 1), 0.0)]


def test_pair_levels_move_only_what_is_received() -> None:
    levels = pair_levels(np.array([10.0, 0.0, 0.0]), np.array([0.0, 2.0, 3.0]))
    assert levels == pytest.approx({(0, 1): 2.0, (0, 2): 3.0})
    book = ShiftBook(3)
    book.place(ShiftOrder(0, 1, 8.0, 0.0, 10.0, 1))
    out, inn = book.moved(5.0, np.array([4.0, 0.0, 0.0]))  # only 4 kW can leave A
    np.testing.assert_allclose(out, [4.0, 0.0, 0.0])
    np.testing.assert_allclose(inn, [0.0, 4.0, 0.0])
