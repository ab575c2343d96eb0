"""Print bench/run.sh or bench/cluster.sh results side by side.

    python bench/report.py bench/results/<run>              the report (run.sh prints it)
    python bench/report.py bench/results/<run> --markdown   the same, as a section to paste
                                                            into bench/README.md
    python bench/report.py --meta bench/results/<run> CMD   (run.sh) record what was run

Every figure comes from the run's JSON files; the header says when, at which commit,
with which command and on what machine (meta.json, written before the run starts).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Run = dict[str, Any]


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True,
                          check=False).stdout.strip()


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def write_meta(out: Path, command: str) -> None:
    """What was run, where and when: the report's header."""
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": git("rev-parse", "--short", "HEAD"),
        # Tracked files changed since the commit: the figures are not the commit's alone.
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "command": command,
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))


def fmt(v: object, spec: str = ".1f") -> str:
    if isinstance(v, str):
        return v
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def load_runs(out: Path) -> dict[str, Run]:
    # In the order they ran (bench/run.sh: chat, chat-rules, ceiling, socketio;
    # bench/cluster.sh: one node, two nodes).
    files = sorted((p for p in out.glob("*.json") if p.name != "meta.json"),
                   key=lambda p: p.stat().st_mtime)
    return {p.stem: json.loads(p.read_text()) for p in files}


def banner(out: Path, name: str) -> str | None:
    """The server's own word on what it ran: "rules …, model …" from its ready banner."""
    log = out / f"{name}.log"
    if not log.exists():
        return None
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("Chat server ready ("):
            return line[len("Chat server ready ("):].rstrip(").")
    return None


def header(out: Path, runs: dict[str, Run]) -> list[str]:
    lines = []
    meta_file = out / "meta.json"
    if meta_file.exists():
        m = json.loads(meta_file.read_text())
        dirty = " with uncommitted changes" if m["dirty"] else ""
        lines += [f"results: {out}", f"date: {m['date']}, commit {m['commit']}{dirty}",
                  f"command: {m['command']}",
                  f"machine: {m['cores']} cores ({m['cpu']}), load average at start "
                  f"{' '.join(m['loadavg_at_start'])}"]
    else:
        lines += [f"results: {out} (no meta.json: commit and command unknown)"]
    for k, r in runs.items():
        lines.append(f"  {k}: {r['command']}")
    return lines


def cores(out: Path) -> int:
    meta = out / "meta.json"
    return int(json.loads(meta.read_text())["cores"]) if meta.exists() else os.cpu_count() or 1


def other_cpu(step: Run, n: int) -> float:
    """% of one core that every other process took (the machine is shared)."""
    return max(0.0, float(step["machine_cpu_pct"] * n - step["server_cpu_pct"]
                          - step["loadgen_cpu_pct"]))


MARK = {"held": "ok", "failed": "FAIL", "inconclusive": "??"}


def table(out: Path, runs: dict[str, Run]) -> list[str]:
    names = list(runs)
    if not names:  # a fan-out only run (KINDS="")
        return []
    lines = ["", f"{'':<40}" + "".join(f"{n:>13}" for n in names)]

    def row(label: str, get: Callable[[Run], object], spec: str = ".1f") -> None:
        vals = []
        for n in names:
            try:
                vals.append(fmt(get(runs[n]), spec))
            except (KeyError, TypeError, ValueError):
                vals.append("-")
        lines.append(f"{label:<40}" + "".join(f"{v:>13}" for v in vals))

    def stage2(name: str) -> str:
        b = banner(out, name)
        if b is None:
            return "-"
        return "off" if b.endswith("model off") else "on"

    if any(banner(out, n) for n in names):
        lines.append(f"{'second stage of moderation':<40}"
                     + "".join(f"{stage2(n):>13}" for n in names))
    row("connections", lambda r: r["connections"], "d")
    row("load generator processes", lambda r: r["procs"], "d")
    row("memory per connection (KiB)", lambda r: r["kib_per_connection"])
    first = next(iter(runs.values()))
    if "idle_cpu_pct" in first:
        row("idle server CPU (% of a core)", lambda r: r["idle_cpu_pct"], ".2f")
        return lines
    lines.append(f"fixed load ({fmt(first['fixed']['rate'], '.0f')} msg/s):")
    f: Callable[[str], Callable[[Run], object]] = lambda k: lambda r: r["fixed"][k]  # noqa: E731
    row("  sends/s", f("sends_per_s"))
    row("  deliveries/s", f("deliveries_per_s"))
    row("  send→ack p50 (ms)", f("ack_p50_ms"), ".2f")
    row("  send→ack p99 (ms)", f("ack_p99_ms"), ".2f")
    row("  send→delivery p50 (ms)", f("delivery_p50_ms"), ".2f")
    row("  send→delivery p95 (ms)", f("delivery_p95_ms"), ".2f")
    row("  send→delivery p99 (ms)", f("delivery_p99_ms"), ".2f")
    row("  send→delivery max (ms)", f("delivery_max_ms"), ".2f")
    row("  errors / disconnects / unanswered",
        lambda r: r["fixed"]["errors"] + r["fixed"]["disconnects"] + r["fixed"]["unanswered"],
        "d")
    row("  server CPU (% of a core)", f("server_cpu_pct"))
    row("  server CPU per delivery (µs)", f("server_cpu_us_per_delivery"))
    row("  load generator CPU (% of a core, all)", f("loadgen_cpu_pct"))
    row("  busiest load generator process (%)", f("loadgen_cpu_max_pct"))
    row("  machine CPU busy (% of all cores)", f("machine_cpu_pct"))
    n_cores = cores(out)
    row("  other processes' CPU (% of a core)", lambda r: other_cpu(r["fixed"], n_cores))
    row("  window held (p99, errors, sends)", lambda r: MARK[r["fixed"]["verdict"]], "")
    row("  server RSS (MB)", f("server_rss_mb"))
    lines.append("step search:")
    row("  max rate held (msg/s)", lambda r: r["max_rate_held"], ".0f")
    row("  deliveries/s at max held", lambda r: max(
        (s["deliveries_per_s"] for s in r["steps"] if s["rate"] == r["max_rate_held"]),
        default=None))
    row("  steps run", lambda r: len(r["steps"]), "d")
    lines.append("")
    lines += ratios(runs)
    lines.append("")
    for n in names:
        lines.append(f"{n} stopped: {runs[n].get('stop_reason', '-')}")
        for s in runs[n].get("steps", []):
            mark = MARK[s["verdict"]]
            lines.append(
                f"  {s['rate']:>7.0f} msg/s {mark:<4} p99 {s['delivery_p99_ms']:7.1f} ms"
                f"  {s['deliveries_per_s']:8.0f} deliveries/s  server {s['server_cpu_pct']:3.0f}%"
                f"  load generator {s['loadgen_cpu_pct']:3.0f}% (busiest "
                f"{s['loadgen_cpu_max_pct']:3.0f}%)  machine {s['machine_cpu_pct']:3.0f}%"
                f" (others {other_cpu(s, n_cores):3.0f}% of a core)")
    return lines


def ratios(runs: dict[str, Run]) -> list[str]:
    """The comparisons issue 17 asks about, printed, never asserted."""
    lines = []

    def held(n: str) -> float | None:
        v = runs[n].get("max_rate_held") if n in runs else None
        return float(v) if v else None

    def per_delivery(n: str) -> float | None:
        v = runs[n]["fixed"].get("server_cpu_us_per_delivery") if n in runs else None
        return float(v) if v else None

    def capped(n: str) -> str:
        why = runs[n].get("stop_reason", "")
        return "" if why.startswith("failed") else " (its search did not end on a failure)"

    if "one-node" in runs and "two-nodes" in runs:
        one = runs["one-node"]["fixed"]["deliveries_per_s"]
        two = runs["two-nodes"]["fixed"]["deliveries_per_s"]
        lines.append(f"fixed-load deliveries/s, two nodes vs one: {two / one:.0%}")
    if "chat" in runs and "ceiling" in runs:
        ours, ceil = runs["chat"]["fixed"], runs["ceiling"]["fixed"]
        lines.append("fixed-load deliveries/s, moderated vs ceiling: "
                     f"{ours['deliveries_per_s'] / ceil['deliveries_per_s']:.0%} (held or "
                     "blocked messages are not delivered)")
        a, b = held("chat"), held("ceiling")
        if a and b:
            lines.append(f"max rate held, moderated vs ceiling: {a / b:.0%} (issue 17 asks "
                         f">= 50%){capped('ceiling')}")
        a, b = per_delivery("chat"), per_delivery("ceiling")
        if a and b:
            lines.append(f"server CPU per delivery at the fixed load, moderated vs ceiling: "
                         f"{a / b:.1f}x (issue 17 asks <= 2x)")
    if "chat" in runs and "socketio" in runs:
        a, b = held("chat"), held("socketio")
        if a and b:
            lines.append(f"max rate held, moderated vs python-socketio: {a / b:.1f}x "
                         f"(issue 17 asks >= 2x){capped('socketio')}")
    if "chat" in runs and "chat-rules" in runs:
        on, off = runs["chat"], runs["chat-rules"]
        a, b = per_delivery("chat"), per_delivery("chat-rules")
        lines.append(
            "second stage on vs off: max rate held "
            f"{fmt(on.get('max_rate_held'), '.0f')} vs {fmt(off.get('max_rate_held'), '.0f')} "
            f"msg/s; fixed-load p99 send→delivery {fmt(on['fixed']['delivery_p99_ms'], '.1f')}"
            f" vs {fmt(off['fixed']['delivery_p99_ms'], '.1f')} ms; server CPU per delivery "
            f"{fmt(a)} vs {fmt(b)} µs")
    return lines


def fanout(out: Path) -> list[str]:
    """Members per room at a fixed rate: how the cost grows with room size."""
    d = out / "fanout"
    runs = [json.loads(p.read_text()) for p in d.glob("*.json")] if d.is_dir() else []
    if not runs:
        return []
    runs.sort(key=lambda r: (r["label"], r["per_room"]))
    rate = fmt(runs[0]["fixed"]["rate"], ".0f")
    lines = ["", f"fan-out at {rate} msg/s, about {runs[0]['connections']} connections "
             f"in rooms of each size:",
             f"{'server':<12}{'per room':>9}{'rooms':>7}{'sends/s':>9}{'deliv./s':>10}"
             f"{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'server %':>9}{'µs/deliv.':>10}"
             f"{'loadgen %':>10}{'others %':>9}{'unans.+err':>11}{'held':>6}"]
    n_cores = cores(out)
    for r in runs:
        s = r["fixed"]
        bad = s["errors"] + s["disconnects"] + s["unanswered"]
        lines.append(
            f"{r['label']:<12}{r['per_room']:>9}{r['rooms']:>7}{s['sends_per_s']:>9.0f}"
            f"{s['deliveries_per_s']:>10.0f}{s['delivery_p50_ms']:>8.2f}"
            f"{s['delivery_p99_ms']:>8.2f}{s['delivery_max_ms']:>8.1f}"
            f"{s['server_cpu_pct']:>9.1f}{fmt(s['server_cpu_us_per_delivery']):>10}"
            f"{s['loadgen_cpu_pct']:>10.1f}{other_cpu(s, n_cores):>9.0f}{bad:>11}"
            f"{MARK[s['verdict']]:>6}")
    lines.append("(µs per delivery is the server's CPU over the window divided by the "
                 "deliveries of its sends: it reads true only where the window held; where "
                 "the server fell behind, part of that work came after the window. % of a "
                 "core; 'others': every other process on the machine.)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path, nargs="?")
    parser.add_argument("--markdown", action="store_true",
                        help="print a section for bench/README.md")
    parser.add_argument("--meta", nargs=2, metavar=("OUT", "COMMAND"),
                        help="record the run's commit, command and machine, then exit")
    args = parser.parse_args()
    if args.meta:
        write_meta(Path(args.meta[0]), args.meta[1])
        return
    if args.out is None:
        parser.error("the results directory is required")
    runs = load_runs(args.out)
    lines = header(args.out, runs) + table(args.out, runs) + fanout(args.out)
    if not args.markdown:
        print("\n".join(lines))
        return
    meta_file = args.out / "meta.json"
    m = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    print(f"### {m.get('date', '?')}, commit {m.get('commit', '?')}"
          f"{' with uncommitted changes' if m.get('dirty') else ''}\n")
    print(f"`{m.get('command', '?')}`, on {m.get('cores', '?')} cores shared with other "
          "work (load average at start "
          f"{' '.join(m.get('loadavg_at_start', ['?']))}): the absolute figures are "
          "indicative; compare the columns of one run, not runs of different days.\n")
    print("```")
    print("\n".join(lines))
    print("```")


if __name__ == "__main__":
    main()
