"""The benchmark's step search (issue 17): it goes on until the server fails, stops at a
cap with a reason, and never blames the server for a step the load generator spoiled.

Pure: each "server" here is a function from a rate to the window it would produce, so
the policy of bench/loadgen.py's search is tested without running a benchmark.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import pytest

from bench.loadgen import ServerGone, judge, round2, search

Step = dict[str, Any]


def args(**over: object) -> argparse.Namespace:
    base: dict[str, object] = {"steps": "400", "step_factor": 1.5, "step_max": 25600,
                               "max_steps": 14, "refine": 1, "p99_limit_ms": 100}
    return argparse.Namespace(**{**base, **over})


def window(rate: float, *, p99: float = 10.0, sends: float | None = None,
           loadgen_max: float = 20.0, machine: float = 50.0, errors: int = 0,
           unanswered: int = 0) -> Step:
    return {"rate": rate, "sends_per_s": rate if sends is None else sends,
            "delivery_p99_ms": p99, "errors": errors, "acks": {}, "disconnects": 0,
            "unanswered": unanswered, "loadgen_cpu_max_pct": loadgen_max,
            "loadgen_cpu_pct": loadgen_max, "server_cpu_pct": 50.0,
            "machine_cpu_pct": machine}


def server(shape: Callable[[float], Step]) -> tuple[Callable[[float], Step], list[float]]:
    """A measure function that judges each window as bench/loadgen.py's does, and the
    rates it was asked for, in order."""
    asked: list[float] = []

    def measure(rate: float) -> Step:
        asked.append(rate)
        step = shape(rate)
        step["verdict"], step["why"] = judge(step, 100)
        return step

    return measure, asked


def capacity(limit: float) -> Callable[[float], Step]:
    return lambda rate: window(rate, p99=10 if rate <= limit else 400)


def test_goes_past_the_given_steps_until_the_server_fails_then_bisects() -> None:
    measure, asked = server(capacity(5000))
    steps, why = search(args(), measure)
    assert asked == [400, 600, 900, 1400, 2100, 3200, 4800, 7200, 6000]
    assert max(s["rate"] for s in steps if s["verdict"] == "held") == 4800
    assert why.startswith("failed at 7200 msg/s: p99 send→delivery 400 ms > 100 ms")


def test_a_given_list_is_used_first() -> None:
    measure, asked = server(capacity(1000))
    search(args(steps="500,700", refine=0), measure)
    assert asked == [500, 700, 1100]


def test_a_server_that_never_fails_stops_at_the_cap_with_the_reason() -> None:
    measure, asked = server(capacity(float("inf")))
    steps, why = search(args(step_max=3000), measure)
    assert max(asked) <= 3000
    assert all(s["verdict"] == "held" for s in steps)
    assert "reached the cap" in why and "2100 msg/s held" in why
    measure, asked = server(capacity(float("inf")))
    _, why = search(args(max_steps=3), measure)
    assert len(asked) == 3 and "--max-steps 3" in why


def test_a_saturated_load_generator_makes_a_step_inconclusive_not_a_failure() -> None:
    def shape(rate: float) -> Step:
        hot = rate >= 2000
        return window(rate, p99=300 if hot else 10, loadgen_max=97 if hot else 40)

    measure, asked = server(shape)
    steps, why = search(args(), measure)
    assert asked[-1] == 2100  # no bisection after an inconclusive step
    assert steps[-1]["verdict"] == "inconclusive"
    assert why.startswith("inconclusive at 2100") and "--procs" in why


@pytest.mark.parametrize(("step", "says"), [
    (window(900, sends=700), "sent 700/s of 900/s"),
    (window(900, errors=3), "3 errors"),
    (window(900, unanswered=5), "5 sends unanswered"),
    (window(900, p99=float("nan")), "p99 send→delivery nan ms"),
])
def test_every_kind_of_failure_fails_the_step_and_is_named(step: Step, says: str) -> None:
    verdict, why = judge(step, 100)
    assert verdict == "failed" and says in why


def test_a_failure_on_a_saturated_machine_says_so() -> None:
    _, why = judge(window(900, p99=500, machine=100), 100)
    assert "every core of the machine was 100% busy" in why


def test_a_server_that_exits_ends_the_search_with_that_reason() -> None:
    def shape(rate: float) -> Step:
        if rate >= 900:
            raise ServerGone
        return window(rate)

    measure, _ = server(shape)
    steps, why = search(args(), measure)
    assert [s["rate"] for s in steps] == [400, 600]
    assert why == "the server process exited at 900 msg/s"


def test_steps_are_round_numbers() -> None:
    assert [round2(x) for x in (1350, 3150, 10800, 600, 47)] == [1400, 3200, 11000, 600, 47]
