"""The checker catches every kind of fault it is meant to (fed hand-made histories)."""

from __future__ import annotations

from tests.faults.checker import ClientView, check

HISTORY = {1: "a", 2: "b", 3: "c"}
ACKED = {"a": 1, "b": 2, "c": 3}


def view(*pairs: tuple[int, str], gap: bool = False) -> ClientView:
    return ClientView(list(pairs), gap)


def test_a_clean_history_passes() -> None:
    r = check(ACKED, [], HISTORY, {"x": view((1, "a"), (2, "b"), (3, "c"))})
    assert r.ok and r.recovered == 0


def test_acked_but_missing_from_the_store_is_lost() -> None:
    assert check(ACKED, [], {1: "a", 3: "c"}, {}).lost == 1


def test_a_silent_hole_for_a_member_is_lost_but_a_gap_is_not() -> None:
    assert check(ACKED, [], HISTORY, {"x": view((1, "a"), (3, "c"))}).lost == 1
    assert check(ACKED, [], HISTORY, {"x": view((1, "a"), (3, "c"), gap=True)}).ok


def test_seen_twice_is_duplicated() -> None:
    r = check(ACKED, [], HISTORY, {"x": view((1, "a"), (2, "b"), (2, "b"), (3, "c"))})
    assert r.duplicated == 1
    assert check(ACKED, [], {1: "a", 2: "b", 3: "c", 4: "a"}, {}).duplicated == 1


def test_blocked_or_never_sent_text_is_unexpected() -> None:
    assert check(ACKED, [], {**HISTORY, 4: "evil"}, {}, forbidden=["evil"]).unexpected == 1
    assert check(ACKED, [], {**HISTORY, 4: "ghost"}, {}).unexpected == 1
    r = check(ACKED, [], HISTORY, {"x": view((1, "a"), (2, "zzz"), (3, "c"))})
    assert r.unexpected == 1


def test_out_of_order_is_reordered() -> None:
    r = check(ACKED, [], HISTORY, {"x": view((1, "a"), (3, "c"), (2, "b"))})
    assert r.reordered == 1


def test_in_doubt_sends_that_landed_are_recovered_not_unexpected() -> None:
    r = check(ACKED, ["d"], {**HISTORY, 4: "d"}, {})
    assert r.ok and r.recovered == 1
