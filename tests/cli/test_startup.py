"""Issue 15 § 3: honest start-up. ``chatserver serve`` binds, then announces; a port in
use is one line on stderr and a non-zero exit with nothing changed; ``--config`` works
before or after any subcommand; a config file that cannot be used stops start-up with
one line naming the key and the nearest valid name. Real ``chatserver`` processes with
a temporary config and data directory."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RULES_DIR

CHATSERVER = str(Path(sys.executable).with_name("chatserver"))
PASSWORD = "a long facilitator password"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CHATSERVER_")}


def _config(tmp: Path, port: int = 0, extra: str = "") -> Path:
    path = tmp / "chat.toml"
    # metrics_port 0: the default (9464) may be another test's or another server's.
    path.write_text(f'[server]\nport = {port}\nmetrics_port = 0\ndata_dir = "{tmp / "data"}"\n'
                    f'[moderation]\nrules_dir = "{RULES_DIR}"\n{extra}')
    return path


def _run(tmp: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHATSERVER, *args], cwd=tmp, env=_env(), input=stdin,
                          capture_output=True, text=True, timeout=120)


def _snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def taken() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_port_in_use_is_one_line_and_a_non_zero_exit_with_nothing_changed(
        tmp_path: Path, taken: int) -> None:
    config = _config(tmp_path, taken)
    added = _run(tmp_path, "--config", str(config), "users", "add", "facilitator",
                 "--role", "facilitator", "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    before = _snapshot(tmp_path / "data")
    done = _run(tmp_path, "serve", "--demo", "--config", str(config))
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"cannot listen on 127.0.0.1:{taken}" in lines[0]
    assert "ready" not in done.stdout and "password" not in done.stdout, done.stdout
    assert _snapshot(tmp_path / "data") == before  # the facilitator's password still works


def test_ready_and_the_demo_passwords_come_only_once_the_port_is_bound(tmp_path: Path) -> None:
    config = _config(tmp_path, 0)
    proc = subprocess.Popen([CHATSERVER, "serve", "--demo", "--config", str(config)],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # ends with the banner's health line, or at exit
            seen.append(line)
            if "Health:" in line:
                break
        out = "".join(seen)
        assert "Chat server ready" in out, out
        assert out.index("password:") < out.index("Chat server ready")
        port = int(re.search(r"Health: +http://localhost:(\d+)/healthz", out)[1])  # type: ignore[index]
        assert port != 0
        # Announced means bound: the first request is answered, no retry.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as res:
            assert res.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize("where", ["before", "after"])
def test_config_is_read_before_or_after_the_subcommand(tmp_path: Path, where: str) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "profanity.toml").write_text((RULES_DIR / "profanity.toml").read_text())
    config = tmp_path / "chat.toml"
    config.write_text(f'[moderation]\nrules_dir = "{rules}"\n')
    args = (["--config", str(config), "rules", "check"] if where == "before"
            else ["rules", "check", "--config", str(config)])
    done = _run(tmp_path, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    full = _run(tmp_path, "rules", "--dir", str(RULES_DIR), "check")
    assert done.stdout.split()[1] != full.stdout.split()[1]  # fewer rules: this config's


@pytest.mark.parametrize(("toml", "names"), [
    ('[servr]\nport = 1\n', ["[servr]", "'server'"]),
    ('[server]\nprot = 8080\n', ["'prot'", "[server]", "'port'"]),
    ('[moderation.model]\nenabeld = false\n', ["'enabeld'", "'enabled'"]),
    ('[notices]\nsignpst = "hello"\n', ["'signpst'", "'signpost'"]),
    ('[server]\nport = "8080"\n', ["server.port", "integer"]),
    ('[server]\nhsts = 1\n', ["server.hsts", "true or false"]),
    ('[store]\nsqlite_synchronous = "off"\n', ["store.sqlite_synchronous", "'off'"]),
])
def test_a_config_that_cannot_be_used_stops_start_up_naming_the_key(
        tmp_path: Path, toml: str, names: list[str]) -> None:
    config = tmp_path / "chat.toml"
    config.write_text(toml)
    for args in (["--config", str(config), "serve"], ["serve", "--config", str(config)],
                 ["users", "list", "--config", str(config)]):
        done = _run(tmp_path, *args)
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        for name in names:
            assert name in lines[0], lines[0]
        assert not (tmp_path / "data").exists()  # nothing made


def test_a_missing_config_file_given_with_config_stops_start_up(tmp_path: Path) -> None:
    done = _run(tmp_path, "serve", "--config", str(tmp_path / "nope.toml"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"config: {tmp_path / 'nope.toml'}: no such file (--config names a file that must "
        "exist)"]


def _wait_for_log(proc: subprocess.Popen[str], event: str) -> dict[str, object]:
    """The next JSON log line of ``event`` the server writes (stdout; ends at exit)."""
    import json
    assert proc.stdout is not None
    for line in proc.stdout:
        if f'"{event}"' in line:
            parsed: dict[str, object] = json.loads(line)
            return parsed
    raise AssertionError(f"the server exited before logging {event}")


def test_a_sighup_reload_is_audited_done_or_refused(tmp_path: Path) -> None:
    import shutil
    import sqlite3
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    config = _config(tmp_path, 0).read_text().replace(str(RULES_DIR), str(rules))
    (tmp_path / "chat.toml").write_text(config)
    proc = subprocess.Popen([CHATSERVER, "serve", "--config", str(tmp_path / "chat.toml")],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    import threading
    watchdog = threading.Timer(120, proc.kill)  # a missing log line fails, never hangs
    watchdog.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the banner's last line: SIGHUP is handled by then
            if "Health:" in line:
                break
        proc.send_signal(signal.SIGHUP)
        assert _wait_for_log(proc, "rules_reload_audited")["refused"] is False
        (rules / "broken.toml").write_text('[[rule]]\nid = "x"\n')
        proc.send_signal(signal.SIGHUP)
        assert _wait_for_log(proc, "rules_reload_audited")["refused"] is True
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    with sqlite3.connect(tmp_path / "data" / "chat.db") as db:
        rows = db.execute("SELECT actor, action, detail FROM audit WHERE action LIKE "
                          "'rules_reload%' ORDER BY id").fetchall()
    assert [(a, act) for a, act, _ in rows] == [("system", "rules_reload"),
                                                ("system", "rules_reload_refused")]
    assert all('"sighup"' in detail for _, _, detail in rows)
