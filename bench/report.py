"""Print bench/run.sh or bench/cluster.sh results side by side:
python bench/report.py bench/results/<run>."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def fmt(v: object, spec: str = ".1f") -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def main() -> None:
    out = Path(sys.argv[1])
    # In the order they ran (bench/run.sh: chat, ceiling, socketio; bench/cluster.sh:
    # one node, two nodes).
    runs = {p.stem: json.loads(p.read_text())
            for p in sorted(out.glob("*.json"), key=lambda p: p.stat().st_mtime)}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    print(f"\nresults: {out}  commit {commit}")
    for k, r in runs.items():
        print(f"  {k}: {r['command']}")
    names = list(runs)
    print(f"\n{'':<30}" + "".join(f"{n:>14}" for n in names))

    def row(label: str, get: object, spec: str = ".1f") -> None:
        vals = []
        for n in names:
            try:
                vals.append(fmt(get(runs[n]), spec))  # type: ignore[operator]
            except (KeyError, TypeError):
                vals.append("-")
        print(f"{label:<30}" + "".join(f"{v:>14}" for v in vals))

    row("connections", lambda r: r["connections"], "d")
    row("memory per connection (KiB)", lambda r: r["kib_per_connection"])
    if "idle_cpu_pct" in next(iter(runs.values())):
        row("idle server CPU (% of a core)", lambda r: r["idle_cpu_pct"], ".2f")
        return
    row("fixed load: sends/s", lambda r: r["fixed"]["sends_per_s"])
    row("fixed load: deliveries/s", lambda r: r["fixed"]["deliveries_per_s"])
    row("send→ack p50 (ms)", lambda r: r["fixed"]["ack_p50_ms"], ".2f")
    row("send→ack p99 (ms)", lambda r: r["fixed"]["ack_p99_ms"], ".2f")
    row("send→delivery p50 (ms)", lambda r: r["fixed"]["delivery_p50_ms"], ".2f")
    row("send→delivery p95 (ms)", lambda r: r["fixed"]["delivery_p95_ms"], ".2f")
    row("send→delivery p99 (ms)", lambda r: r["fixed"]["delivery_p99_ms"], ".2f")
    row("send→delivery max (ms)", lambda r: r["fixed"]["delivery_max_ms"], ".2f")
    row("errors / disconnects", lambda r: r["fixed"]["errors"] + r["fixed"]["disconnects"], "d")
    row("server CPU (% of a core)", lambda r: r["fixed"]["server_cpu_pct"])
    row("loadgen CPU (% of a core)", lambda r: r["fixed"]["loadgen_cpu_pct"])
    row("server RSS (MB)", lambda r: r["fixed"]["server_rss_mb"])
    row("max rate held (msg/s)", lambda r: r["max_rate_held"], ".0f")
    row("deliveries/s at max held", lambda r: max(
        (s["deliveries_per_s"] for s in r["steps"] if s["rate"] == r["max_rate_held"]),
        default=None))
    if "one-node" in runs and "two-nodes" in runs:
        one = runs["one-node"]["fixed"]["deliveries_per_s"]
        two = runs["two-nodes"]["fixed"]["deliveries_per_s"]
        print(f"\nfixed-load deliveries/s, two nodes vs one: {two / one:.0%}")
    if "chat" in runs and "ceiling" in runs:
        ours = runs["chat"]["fixed"]["deliveries_per_s"]
        ceil = runs["ceiling"]["fixed"]["deliveries_per_s"]
        print(f"\nfixed-load deliveries/s, moderated vs ceiling: {ours / ceil:.0%}")
    for n in names:
        steps = ", ".join(f"{s['rate']:.0f}→p99 {s['delivery_p99_ms']:.1f}ms"
                          + (f" err {s['errors']}" if s["errors"] else "")
                          for s in runs[n].get("steps", []))
        print(f"  step search {n}: {steps}")


if __name__ == "__main__":
    main()
