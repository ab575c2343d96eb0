"""SECURITY.md F-10, SG-07, SG-17: the store is full. Nobody is told an outcome that is
not durable, nothing is fanned out, crisis support still reaches the sender, and the
service recovers without a restart once space is freed."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from chatserver.moderation.engine import RuleSet
from tests.conftest import Running, start_server


async def _fill(running: Running) -> None:
    db = running.server.store.db  # type: ignore[attr-defined]
    async with db.execute("PRAGMA page_count") as cur:
        row = await cur.fetchone()
    await db.execute(f"PRAGMA max_page_count={row[0]}")


async def test_disk_full_rejects_with_internal_and_fans_out_nothing(tmp_path: Path,
                                                                   rules: RuleSet) -> None:
    # Limits raised so that one person can fill the disk in a test.
    running = await start_server(tmp_path, rules, rate_messages=100_000, frame_rate=1e6,
                                 frame_burst=1e6)
    try:
        await _disk_full(running)
    finally:
        await running.stop()


async def _disk_full(running: Running) -> None:
    ana = await running.client(await running.join("Ana"))
    ben = await running.client(await running.join("Ben"))
    await ana.say("before", "b0")
    await ben.expect("message", lambda e: e["id"] == "b0")
    await _fill(running)
    filler = 0
    rejected = ""
    for size in (1900, 200, 20, 1):  # fill every last byte; then every write fails whole
        while True:
            ack = await ana.say("x" * size, f"fill{filler}")
            filler += 1
            assert filler < 2000
            if ack["status"] == "rejected":
                assert ack["code"] == "internal"
                rejected = rejected or ack["ref"]
                break
    # Held messages live in their own table: fill that too, so nothing fits anywhere.
    for size in (1900, 200, 20, 1):
        while True:
            ack = await ana.say("how old are you " + "y" * size, f"fill{filler}")
            filler += 1
            assert filler < 4000
            if ack["status"] == "rejected":
                break
    # SG-07: the signpost does not depend on the store.
    await ana.send(type="send", room="lounge", id="risk", text="i want to kill myself")
    await ana.expect("notice", lambda e: e["kind"] == "signpost")
    risk_ack = await ana.expect("ack", lambda e: e["ref"] == "risk")
    assert (risk_ack["status"], risk_ack.get("code")) == ("rejected", "internal"), risk_ack
    metrics = running.server.metrics
    assert metrics.store_errors._value.get() >= 2
    # Free space: the same server recovers, no restart.
    await running.server.store.db.execute("PRAGMA max_page_count=1073741823")  # type: ignore[attr-defined]
    assert (await ana.say("after", "a1"))["status"] == "sent"
    await ben.expect("message", lambda e: e["id"] == "a1")
    received = {e.get("id") for e in ben.seen if e["type"] == "message"}
    assert rejected not in received and "risk" not in received
    # The retried id is treated as new: the failed attempt left nothing behind.
    assert (await ana.say("x" * 1900, rejected))["status"] == "sent"


async def test_f11_a_failing_log_sink_never_fails_a_request(tmp_path: Path,
                                                            rules: RuleSet) -> None:
    """SECURITY.md F-11: logs to /dev/full (ENOSPC): the server keeps serving and counts
    what it dropped."""
    from chatserver.observability import configure_logging, dropped_log_lines

    before = dropped_log_lines()
    full = open("/dev/full", "w", buffering=1)  # noqa: ASYNC230, SIM115 - a device
    configure_logging("debug", stream=full)
    try:
        running = await start_server(tmp_path, rules)
        ana = await running.client(await running.join("Ana"))
        assert (await ana.say("still served", "s1"))["status"] == "sent"
        await ana.raw("not json")  # an error path that logs
        assert (await ana.expect("error"))["code"] == "bad_request"
        await running.stop()
    finally:
        configure_logging("warning", stream=sys.stdout)
        with contextlib.suppress(OSError):  # its buffer cannot be flushed: that is the point
            full.close()
    assert dropped_log_lines() > before
