"""The package as PyPI would get it: `python -m build` makes the sdist and the wheel, their
metadata is complete, and the wheel installs into a fresh venv and imports (with py.typed).

Needs the network (build isolation fetches hatchling; the venv fetches httpx and websockets)
or a pip cache that has them."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import wsgate_client
from conftest import spawn

PROJECT = Path(__file__).resolve().parents[1]
STEP_TIMEOUT = 240


def run(argv: list[str], cwd: Path | None = None) -> str:
    """Runs a child (that dies with pytest) to its end, within STEP_TIMEOUT; fails on non-zero."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    proc = spawn(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=STEP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=10)
        pytest.fail(f"{argv} did not finish within {STEP_TIMEOUT} s")
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{text[-4000:]}"
    return text


@pytest.mark.timeout(900)
def test_build_sdist_and_wheel_then_install_the_wheel_in_a_fresh_venv(tmp_path):
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(dist), str(PROJECT)])
    version = wsgate_client.__version__
    wheels = list(dist.glob("*.whl"))
    sdists = list(dist.glob("*.tar.gz"))
    assert [w.name for w in wheels] == [f"wsgate_client-{version}-py3-none-any.whl"]
    assert [s.name for s in sdists] == [f"wsgate_client-{version}.tar.gz"]

    with zipfile.ZipFile(wheels[0]) as whl:
        names = set(whl.namelist())
        for module in ("__init__.py", "_core.py", "admin.py", "errors.py", "listen.py", "publish.py", "sync.py", "py.typed"):
            assert f"wsgate_client/{module}" in names, f"{module} missing from the wheel"
        assert not any(n.startswith("tests/") for n in names), "tests are not installed"
        info = f"wsgate_client-{version}.dist-info"
        assert f"{info}/licenses/LICENSE" in names
        meta = Parser().parsestr(whl.read(f"{info}/METADATA").decode())
    assert meta["Name"] == "wsgate-client"
    assert meta["Version"] == version
    assert meta["Summary"]
    assert meta["License-Expression"] == "MIT"
    assert meta["Requires-Python"] == ">=3.10"
    assert meta["Author"] == "the wsgate authors" and meta["Maintainer"] == "the wsgate authors"
    assert meta["Description-Content-Type"] == "text/markdown"
    assert "# wsgate-client (Python)" in meta.get_payload(), "the README is the long description"
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert urls["Repository"] == urls["Homepage"] == "https://github.com/wsgate/wsgate"
    classifiers = meta.get_all("Classifier")
    assert "Typing :: Typed" in classifiers and "Programming Language :: Python :: 3.10" in classifiers
    requires = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    # every dependency pinned to a range: a floor and a ceiling
    assert sorted(r.split(">")[0].split("<")[0] for r in requires) == ["httpx", "websockets"]
    for r in requires:
        assert ">=" in r and "<" in r.replace("<=", ""), f"{r} is not a range"

    with tarfile.open(sdists[0]) as sd:
        members = {m.name.split("/", 1)[1] for m in sd.getmembers() if "/" in m.name}
    for f in ("pyproject.toml", "README.md", "LICENSE", "src/wsgate_client/py.typed", "src/wsgate_client/sync.py", "tests/conftest.py"):
        assert f in members, f"{f} missing from the sdist"
    assert not any(m.startswith(".venv") for m in members)

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    py = venv / "bin" / "python"
    run([str(py), "-m", "pip", "install", "--quiet", str(wheels[0])])
    out = run(
        [
            str(py),
            "-I",  # nothing from the current directory or PYTHON* variables: only what was installed
            "-c",
            "import pathlib, wsgate_client, wsgate_client.sync as s;"
            "from wsgate_client import Admin, SyncPublisher, SyncAdmin, publish_batch, Revoked, History;"
            "p = pathlib.Path(wsgate_client.__file__).parent;"
            "print(wsgate_client.__version__, p, (p / 'py.typed').is_file(), s.SyncPublisher is SyncPublisher)",
        ],
        cwd=tmp_path,
    )
    got_version, where, typed, same = out.split()
    assert got_version == version
    assert Path(where).is_relative_to(venv), f"imported from {where}, not the fresh venv"
    assert typed == "True" and same == "True"
