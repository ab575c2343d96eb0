"""Issue 15 § 6 and acceptance 3: every command in README.md runs as written.

The convention (README § Tests): every ```sh block is run by bash with ``set -euo
pipefail``, top to bottom, in a fresh copy of the repository per ``##`` section (the
sections at the same time, each in its own copy); each ```console block is a session
driven like a person at a terminal: its ``$`` line run, each ``>`` line typed, each
``<`` frame awaited by its ``type`` (and ``status``) before the next line. Every other
block is illustrative. What is changed, and why:

- the ports the README names become free ones (other servers run on this machine); a
  ``make run`` is started with port 0 and the port it prints is used for 8080 after it;
- the PostgreSQL schema ``chat`` and the Redis key prefix become the test's own, dropped
  after (never another run's data);
- ``make run`` runs in the background until the section's last block has run (a server
  runs until stopped); ``make test`` is not run (it is this suite).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from tests.conftest import ROOT, redis_up, require
from tests.faults.test_restart import free_port

README = ROOT / "README.md"
NAMED_PORTS = re.compile(r"(?<![\d.])(8080|8081|8082|9464|9465|9466)(?!\d)")
"""The ports the README names (the public and metrics ports of make run and the
cluster's two nodes): each becomes a free port of the test's."""
SCHEMA = re.compile(r"schema=chat\b")
SERVER = re.compile(r"^make run\b")
"""A foreground server in a block: started in the background, its URL awaited."""
NOT_RUN = re.compile(r"^make test\b")
"""The test suite itself."""
READY = re.compile(r"Young person's room: +http://localhost:(\d+)/")
METRICS = re.compile(r"Metrics \(ops only\): +http://localhost:(\d+)/metrics")
ANSI = re.compile(r"\x1b(\[[0-9;]*[A-Za-z]|[78])")
START_CEILING_S = 90
"""A ceiling, not a wait: start-up loads the encoder (seconds on a busy 2-core machine)."""


@dataclass(frozen=True)
class Block:
    section: str
    lang: str
    text: str
    line: int


def readme_blocks() -> list[Block]:
    """Every fenced block with the ``##`` section it is in (markdown-it parses)."""
    tokens = MarkdownIt().parse(README.read_text(encoding="utf-8"))
    section, out = "", []
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.tag == "h2":
            section = tokens[i + 1].content
        elif token.type == "fence":
            line = token.map[0] + 1 if token.map else 0
            out.append(Block(section, token.info.strip().split(" ")[0], token.content, line))
    return out


def runnable() -> dict[str, list[Block]]:
    sections: dict[str, list[Block]] = {}
    for block in readme_blocks():
        if block.lang in ("sh", "console"):
            sections.setdefault(block.section, []).append(block)
    return sections


def test_the_readme_has_what_this_test_runs() -> None:
    """The convention finds the blocks (so the test below cannot pass by running nothing):
    make run, the example session with a send, and the cluster recipe that makes a room."""
    sections = runnable()
    text = {name: "".join(b.text for b in blocks) for name, blocks in sections.items()}
    assert "make run" in text["Two commands"]
    assert '"type":"send"' in text["Two commands"]
    assert [b.lang for b in sections["Two commands"]] == ["sh", "sh", "console"]
    assert "/api/rooms" in text["Running a cluster"] and "serve --node-id b &" in \
        text["Running a cluster"]


@dataclass
class Section:
    """One README section run in its own copy of the repository."""

    name: str
    blocks: list[Block]
    tmp: Path
    copy: Path = field(init=False)
    ports: dict[str, int] = field(default_factory=dict)
    schema: str = field(default_factory=lambda: f"readme_{secrets.token_hex(4)}")
    prefix: str = field(default_factory=lambda: f"readme{secrets.token_hex(4)}")
    running: list[tuple[subprocess.Popen[bytes], queue.Queue[str | None] | None]] = field(
        default_factory=list)
    """What this section started (each in a process group of its own), with its output."""
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        slug = re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")
        self.copy = self.tmp / slug
        self.log = self.tmp / f"readme-{slug}.log"  # scanned by tests/logscan too

    # ------------------------------------------------------------ set-up
    def make_copy(self) -> None:
        """The repository's files (tracked and new, not ignored ones), times kept, with
        this checkout's virtualenv: nothing is installed, and make sees it up to date."""
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], cwd=ROOT, check=True,
                                capture_output=True).stdout.decode().split("\0")
        for rel in filter(None, listed):
            src = ROOT / rel
            if src.is_file():
                dst = self.copy / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        (self.copy / ".venv").symlink_to(ROOT / ".venv")

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATSERVER_")}
        env["CHATSERVER_BROKER_PREFIX"] = self.prefix
        return env

    def substitute(self, text: str) -> str:
        def port(m: re.Match[str]) -> str:
            if m[1] not in self.ports:
                self.ports[m[1]] = free_port()
            return str(self.ports[m[1]])
        return SCHEMA.sub(f"schema={self.schema}", NAMED_PORTS.sub(port, text))

    # ------------------------------------------------------------ running
    def run(self) -> None:
        printed = ""
        for block in self.blocks:
            where = f"README.md line {block.line} ({self.name})"
            if block.lang == "sh":
                printed = self.run_sh(block, where)
            else:
                self.run_console(block, where, printed)

    def run_sh(self, block: Block, where: str) -> str:
        lines = block.text.splitlines()
        for line in lines:
            if SERVER.match(line):
                self.start_server(line, where)
        script = "\n".join(line for line in lines
                           if not SERVER.match(line) and not NOT_RUN.match(line))
        # What the block left running (`&`) is stopped when it ends, and waited for.
        script = f"trap 'jobs -p | xargs -r kill; wait' EXIT\n{script}"
        out = self.tmp / f"block-{block.line}.log"
        with out.open("wb") as f:
            # stdout to a file: servers the block leaves running (`&`) keep it open.
            proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c",
                                     self.substitute(script)],
                                    cwd=self.copy, env=self.env, stdout=f,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            self.running.append((proc, None))
            code = proc.wait(timeout=2 * START_CEILING_S)
        printed = out.read_text(errors="replace")
        with self.log.open("a") as log:
            log.write(printed)
        assert code == 0, f"{where}: a command failed (exit {code}):\n{printed}"
        return printed

    def start_server(self, line: str, where: str) -> None:
        """``make run``: on port 0 (and any metrics port); the URL it prints is then the
        README's 8080 (and 9464)."""
        env = {**self.env, "CHATSERVER_SERVER_PORT": "0", "CHATSERVER_SERVER_METRICS_PORT": "0"}
        proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", line], cwd=self.copy,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        lines = _lines(proc)
        self.running.append((proc, lines))
        seen: list[str] = []
        port = None
        while True:
            try:
                text = lines.get(timeout=START_CEILING_S)
            except queue.Empty:
                pytest.fail(f"{where}: {line!r} printed no URL:\n{''.join(seen)}")
            if text is None:
                pytest.fail(f"{where}: {line!r} exited:\n{''.join(seen)}")
            seen.append(text)
            if m := READY.search(text):
                port = int(m[1])
            if (m := METRICS.search(text)) and port is not None:
                self.ports["8080"], self.ports["9464"] = port, int(m[1])
                break
        with self.log.open("a") as log:
            log.write("".join(seen))

    def run_console(self, block: Block, where: str, printed: str) -> None:
        """Type the ``>`` lines into the ``$`` command, awaiting each ``<`` frame first."""
        token = re.search(r'"token":"([^"]+)"', printed)
        steps = block.text.splitlines()
        command = next(s.removeprefix("$ ") for s in steps if s.startswith("$ "))
        proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", self.substitute(command)],
                                cwd=self.copy, env={**self.env, "PYTHONUNBUFFERED": "1"},
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        assert proc.stdin is not None
        lines = _lines(proc)
        self.running.append((proc, lines))
        frames: list[dict[str, object]] = []
        seen: list[str] = []
        for step in steps:
            if step.startswith("> "):
                typed = step[2:]
                if "<TOKEN>" in typed:
                    assert token, f"{where}: no token printed by the block before"
                    typed = typed.replace("<TOKEN>", token[1])
                proc.stdin.write(typed.encode() + b"\n")
                proc.stdin.flush()
            elif step.startswith("< "):
                want = dict(re.findall(r'"(type|status)":"([^"]+)"', step))
                self._await_frame(want, frames, lines, seen, where)
        proc.stdin.close()
        code = proc.wait(timeout=30)
        # A client's transcript, not a log: it rightly holds the messages it was sent
        # (tests/logscan searches the servers' logs, *.log, for them).
        with (self.tmp / f"{self.log.stem}-client.txt").open("a") as transcript:
            transcript.write("".join(seen))
        assert code == 0, f"{where}: {command!r} exited {code}:\n{''.join(seen)}"

    @staticmethod
    def _await_frame(want: dict[str, str], frames: list[dict[str, object]],
                     lines: queue.Queue[str | None], seen: list[str], where: str) -> None:
        """The first frame not yet claimed that has ``want``'s fields (others wait)."""
        def match(frame: dict[str, object]) -> bool:
            return all(frame.get(k) == v for k, v in want.items())
        while not any(match(f) for f in frames):
            try:
                text = lines.get(timeout=30)
            except queue.Empty:
                text = None
            if text is None:
                pytest.fail(f"{where}: no frame {want} came:\n{''.join(seen)}")
            seen.append(text)
            plain = ANSI.sub("", text)
            if "< {" in plain:
                frames.append(json.loads(plain[plain.index("< {") + 2:]))
        frames.remove(next(f for f in frames if match(f)))

    # ------------------------------------------------------------ tear-down
    def stop(self) -> None:
        """Every process group this section started that still runs (make run's server):
        SIGTERM, then its output's end (every process in it gone) within a ceiling."""
        for proc, _ in self.running:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc, lines in self.running:
            try:
                while lines is not None and lines.get(timeout=30) is not None:
                    pass
                proc.wait(timeout=30)
            except (queue.Empty, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)


def _lines(proc: subprocess.Popen[bytes]) -> queue.Queue[str | None]:
    """The process's output, line by line, None at its end (a reader thread)."""
    out: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for raw in proc.stdout:
                out.put(raw.decode(errors="replace"))
        out.put(None)
    threading.Thread(target=read, daemon=True).start()
    return out


async def _services_for(sections: dict[str, list[Block]]) -> None:
    text = "".join(b.text for blocks in sections.values() for b in blocks)
    if m := re.search(r"redis://[^\s']+", text):
        require(await redis_up(m[0]), f"Redis is not reachable at {m[0]} (README)")
    if m := re.search(r"postgresql://[^?'\s]+", text):
        import asyncpg
        try:
            conn = await asyncio.wait_for(asyncpg.connect(m[0]), 3)
        except Exception:
            require(False, f"PostgreSQL is not reachable at {m[0]} (README)")
        else:
            await conn.close()


async def _clean(section: Section, text: str) -> None:
    if m := re.search(r"postgresql://[^?'\s]+", text):
        import asyncpg
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            conn = await asyncpg.connect(m[0])
            await conn.execute(f"DROP SCHEMA IF EXISTS {section.schema} CASCADE")
            await conn.close()
    if m := re.search(r"redis://[^\s']+", text):
        import redis.asyncio as aioredis
        with contextlib.suppress(Exception):
            r = aioredis.Redis.from_url(m[0], socket_connect_timeout=1)
            keys = [k async for k in r.scan_iter(f"{section.prefix}:*")]
            if keys:
                await r.delete(*keys)
            await r.aclose()


@contextlib.contextmanager
def _sections(tmp: Path) -> Iterator[list[Section]]:
    sections = [Section(name, blocks, tmp) for name, blocks in runnable().items()]
    try:
        yield sections
    finally:
        for s in sections:
            s.stop()
        for s in sections:
            asyncio.run(_clean(s, "".join(b.text for b in s.blocks)))


def test_every_readme_command_runs_as_written(tmp_path: Path) -> None:
    asyncio.run(_services_for(runnable()))
    up_to_date = subprocess.run(["make", "-q", ".venv/.installed"], cwd=ROOT,
                                capture_output=True).returncode == 0
    require(up_to_date, "the virtualenv is older than pyproject.toml: make .venv/.installed")
    with _sections(tmp_path) as sections, ThreadPoolExecutor(len(sections)) as pool:
        def one(section: Section) -> str | None:
            try:
                section.make_copy()
                section.run()
            except BaseException as e:  # pytest.fail included: report every section
                return f"{section.name}: {e}"
            return None
        failures = [f for f in pool.map(one, sections) if f]
    assert not failures, "\n\n".join(failures)
