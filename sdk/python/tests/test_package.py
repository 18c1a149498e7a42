"""The package as people get it: `pip install sdk/python` in a fresh virtual environment,
offline (from the source folder and from a wheel), typed (py.typed, mypy --strict), with a
dependency-free core, importable on the other Python versions this machine has."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

SDK = Path(__file__).resolve().parents[1]
SMOKE = textwrap.dedent("""
    import json, os, sys, tempfile
    import jobdock
    from jobdock import lake, log, source, state
    os.environ["GREETING"] = "hi"
    assert jobdock.config("GREETING") == "hi"
    assert jobdock.config("N", default=3, cast=int) == 3
    log.info("smoke", python=sys.version.split()[0])
    jobdock.progress(1, 1, "smoke")
    try:
        state.get()
    except jobdock.EngineUnavailable:
        pass
    folder = tempfile.mkdtemp()
    with lake.writer(folder, "s", "e", gzip=True) as out:
        out.write({"a": 1})
    assert len(out.files) == 1
    heavy = [m for m in ("fsspec", "pyarrow", "requests", "s3fs") if m in sys.modules]
    assert not heavy, heavy
    print("SMOKE-OK", jobdock.__file__)
""")


def copy_sdk(dest: Path) -> Path:
    """The SDK's sources without tests or build leftovers, so that nothing is built inside
    the working tree."""
    target = dest / "sdk-python"
    shutil.copytree(SDK, target, ignore=shutil.ignore_patterns(
        "tests", "build", "dist", "*.egg-info", "__pycache__", ".mypy_cache"))
    return target


def sh(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **(env or {})})
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SDK's wheel, built with the setuptools of the test environment: no index, no
    download, nothing written into the working tree."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    wheels = tmp_path / "wheels"
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
       "-w", wheels, copy_sdk(tmp_path))
    (wheel,) = wheels.glob("jobdock-*.whl")
    return wheel


def fresh_venv(path: Path) -> Path:
    """A new virtual environment without pip of its own (the test environment's pip installs
    into it with --python), so that making it takes a moment."""
    sh(sys.executable, "-m", "venv", "--without-pip", path)
    return path / "bin" / "python"


def pip_into(python: Path, *args: str | Path) -> str:
    return sh(sys.executable, "-m", "pip", "--python", python, "install", *args, env={"PYTHONPATH": ""})


def smoke(python: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir(exist_ok=True)
    out = sh(python, "-c", SMOKE, cwd=outside, env={"PYTHONPATH": ""})
    assert "SMOKE-OK" in out and str(python.parents[1]) in out, out
    typed = sh(python, "-c", "import jobdock, pathlib; print((pathlib.Path(jobdock.__file__).parent / 'py.typed').exists())",
               cwd=outside, env={"PYTHONPATH": ""})
    assert typed.strip() == "True"


def test_the_wheel(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "jobdock/py.typed" in names and "jobdock/__init__.py" in names
    assert not [n for n in names if n.startswith("tests/") or "/test_" in n]
    metadata = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("METADATA"))).decode()
    assert "Requires-Dist: fsspec" in metadata and 'extra == "lake"' in metadata
    assert 'extra == "parquet"' in metadata
    # the core requires nothing
    assert not [ln for ln in metadata.splitlines() if ln.startswith("Requires-Dist") and "extra ==" not in ln]


def test_offline_install_from_a_wheel_into_a_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    python = fresh_venv(tmp_path / "venv")
    pip_into(python, "--no-index", "--find-links", wheel.parent, "jobdock")
    smoke(python, tmp_path)


def test_pip_install_of_the_source_folder_into_a_fresh_venv(tmp_path: Path) -> None:
    """Exactly `pip install sdk/python`: pip fetches the build backend (setuptools) from the
    package index into an isolated build environment."""
    python = fresh_venv(tmp_path / "venv")
    pip_into(python, copy_sdk(tmp_path))
    smoke(python, tmp_path)


def test_the_core_has_no_dependencies() -> None:
    project = tomllib.loads((SDK / "pyproject.toml").read_text())["project"]
    assert project["dependencies"] == []
    extras = project["optional-dependencies"]
    assert {"fsspec", "s3fs", "adlfs"} <= {d.split(">")[0].split("=")[0] for d in extras["lake"]}
    assert any(d.startswith("pyarrow") for d in extras["parquet"])


def test_mypy_strict(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jobdock-sdk-mypy"
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(SDK / "pyproject.toml"),
         "--cache-dir", str(cache), "-p", "jobdock"],
        cwd=SDK / "src", capture_output=True, text=True,
        env={**os.environ, "MYPYPATH": str(SDK / "src")},
    )
    assert done.returncode == 0, done.stdout + done.stderr


def other_pythons() -> list[Path]:
    root = Path.home() / ".pyenv" / "versions"
    found = []
    for minor in ("3.9", "3.10", "3.12", "3.13"):
        for candidate in sorted(root.glob(f"{minor}.*/bin/python{minor}")):
            found.append(candidate)
            break
    return found


@pytest.mark.parametrize("python", other_pythons() or [None], ids=lambda p: p.name if p else "none")
def test_other_python_versions_import_and_run_the_core(python: Path | None) -> None:
    if python is None:
        pytest.skip("no other Python version on this machine (pyenv)")
    out = sh(python, "-I", "-c", f"import sys; sys.path.insert(0, {str(SDK / 'src')!r})\n" + SMOKE)
    assert "SMOKE-OK" in out
