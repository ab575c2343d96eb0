"""Issue 15 § 5: ``chatserver serve`` serves ``/metrics`` on its own listener
(``server.metrics_host:metrics_port``, loopback by default), never on the public port;
a metrics port in use stops start-up like a public one. Real ``chatserver`` processes."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatserver.config import ServerConfig
from tests.conftest import RULES_DIR

CHATSERVER = str(Path(sys.executable).with_name("chatserver"))


def _config(tmp: Path, metrics_port: int) -> Path:
    # One rule file and no model: start-up's slow parts (compiling every rule, loading
    # the model) are beside the point here.
    rules = tmp / "rules"
    rules.mkdir()
    (rules / "profanity.toml").write_text((RULES_DIR / "profanity.toml").read_text())
    path = tmp / "chat.toml"
    path.write_text(f'[server]\nport = 0\nmetrics_port = {metrics_port}\n'
                    f'data_dir = "{tmp / "data"}"\n[moderation]\nrules_dir = "{rules}"\n'
                    '[moderation.model]\nenabled = false\n')
    return path


@pytest.fixture
def taken() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _env() -> dict[str, str]:
    import os
    return {k: v for k, v in os.environ.items() if not k.startswith("CHATSERVER_")}


def test_metrics_are_on_loopback_by_default() -> None:
    assert ServerConfig().metrics_host == "127.0.0.1"


def test_serve_answers_metrics_on_the_metrics_port_only(tmp_path: Path) -> None:
    proc = subprocess.Popen([CHATSERVER, "serve", "--config", str(_config(tmp_path, 0))],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # the banner ends with the metrics line, or at exit
            seen.append(line)
            if "Metrics" in line:
                break
        out = "".join(seen)
        public = re.search(r"Health: +http://localhost:(\d+)/healthz", out)
        metrics = re.search(r"Metrics \(ops only\): +http://localhost:(\d+)/metrics", out)
        assert public is not None and metrics is not None, out
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{public[1]}/metrics", timeout=10)
        assert refused.value.code == 404
        refused.value.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics[1]}/metrics",
                                    timeout=10) as res:
            assert res.status == 200
            assert "chat_held_oldest_seconds" in res.read().decode()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_metrics_port_in_use_is_one_line_and_a_non_zero_exit(tmp_path: Path,
                                                                taken: int) -> None:
    done = subprocess.run([CHATSERVER, "serve", "--demo", "--config",
                           str(_config(tmp_path, taken))], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"cannot listen on 127.0.0.1:{taken} for /metrics" in lines[0]
    assert "ready" not in done.stdout and "password" not in done.stdout, done.stdout
    assert not (tmp_path / "data").exists()  # nothing made: no store, no secret
