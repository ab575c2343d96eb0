"""Issue 15 § 2: a wheel, installed in a fresh virtualenv outside the repo, serves every
page and loads the rules and the heads from its own package data.

The wheel is built (``python -m build``) from a copy of ``chatserver/`` and
``pyproject.toml`` in a temporary directory, installed with ``--no-deps`` into a new
virtualenv, and given the project venv's third-party packages through a ``.pth`` line
(nothing re-downloaded). A ``.pth`` line adds a directory without running the ``.pth``
files inside it, so the project's editable install stays out: the test checks that
``chatserver`` is imported from the new virtualenv.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import sysconfig
import urllib.error
import urllib.request
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.faults.test_restart import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin/`` of a fresh virtualenv holding only the wheel."""
    tmp = tmp_path_factory.mktemp("wheel")
    assert ROOT not in tmp.parents
    src = tmp / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copytree(ROOT / "chatserver", src / "chatserver",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp / "dist"),
                    str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp / "dist").glob("chatserver-*.whl")
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, timeout=120)
    site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "zz_project_deps.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    where = subprocess.run([str(python), "-c", "import chatserver; print(chatserver.__file__)"],
                           check=True, capture_output=True, text=True, cwd=tmp).stdout
    assert Path(where.strip()).is_relative_to(env_dir), where
    return env_dir / "bin"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("CHATSERVER_", "PYTHON", "VIRTUAL_ENV"))}


def test_the_installed_wheel_loads_the_packaged_rules(installed: Path,
                                                      tmp_path: Path) -> None:
    done = subprocess.run([str(installed / "chatserver"), "rules", "check"], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok: "), done.stdout


@contextlib.contextmanager
def _serving(installed: Path, cwd: Path) -> Iterator[int]:
    port = free_port()
    with open(cwd / "server.log", "wb") as log:
        proc = subprocess.Popen([str(installed / "chatserver"), "serve", "--port", str(port)],
                                cwd=cwd, env={**_env(), "CHATSERVER_SERVER_METRICS_PORT": "0"},
                                stdout=log, stderr=log)
    try:
        for _ in range(600):  # readiness: the port answers /healthz (bounded retries)
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=0.2)
                break
            assert proc.poll() is None, (cwd / "server.log").read_text()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.05)
        else:
            pytest.fail("the installed server did not become healthy")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _get(port: int, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as res:
            return res.status, res.headers.get("Content-Type", ""), res.read()
    except urllib.error.HTTPError as e:
        return e.code, "", b""


def test_the_installed_wheel_serves_every_page(installed: Path, tmp_path: Path) -> None:
    with _serving(installed, tmp_path) as port:
        status, ctype, body = _get(port, "/")
        assert status == 200 and ctype.startswith("text/html") and b"room.js" in body
        status, ctype, body = _get(port, "/staff")
        assert status == 200 and ctype.startswith("text/html") and b"staff.js" in body
        for asset, kind in (("room.js", "javascript"), ("staff.js", "javascript"),
                            ("common.js", "javascript"), ("style.css", "text/css")):
            status, ctype, body = _get(port, f"/static/{asset}")
            assert status == 200 and kind in ctype and body, asset
        assert _get(port, "/static/../pyproject.toml")[0] == 404
    assert (tmp_path / "data" / "chat.db").exists()  # data_dir is the working directory's


def test_the_installed_wheel_holds_every_redis_script(installed: Path, tmp_path: Path) -> None:
    """A cluster node loads its Lua scripts from package data when ``brokers/redis.py``
    and ``brokers/redis_state.py`` are imported: each must be in the wheel."""
    scripts = sorted(p.name for p in (ROOT / "chatserver/brokers/redis_scripts").glob("*.lua"))
    assert scripts
    listing = ("import chatserver.brokers.redis, chatserver.brokers.redis_state\n"
               "from importlib.resources import files\n"
               "print(*sorted(p.name for p in (files('chatserver.brokers') / 'redis_scripts')"
               ".iterdir() if p.name.endswith('.lua')))")
    done = subprocess.run([str(installed / "python"), "-c", listing], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == scripts
