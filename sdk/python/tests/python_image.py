"""A local container image with a Python interpreter and the SDK, for the tests that run the
SDK inside real runs of a live engine (no registry is reachable here, so no image can be
pulled).

The base image holds the interpreter the tests run on (its standard library, without tests,
GUI and site-packages), the shared libraries it and its extension modules link against, as
`ldd` lists them, and the dynamic loader; it is built once per machine with `docker import`
and tagged by the interpreter's identity. The SDK image adds `src/jobdock` at
`/opt/jobdock-sdk` (on PYTHONPATH) with `docker create` + `docker cp` + `docker commit`, and
is tagged by a hash of the SDK's sources, so that an unchanged SDK reuses it.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDK_SRC = Path(__file__).resolve().parents[1] / "src"
_SKIP_DIRS = {"test", "site-packages", "idlelib", "tkinter", "turtledemo", "ensurepip",
              "lib2to3", "pydoc_data", "__pycache__", "unittest"}


# Changed whenever what base_image() lays out changes, so that machines rebuild it.
_LAYOUT = "2"


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["docker", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def _exists(ref: str) -> bool:
    return _docker("image", "inspect", ref, check=False).returncode == 0


def _ldd(path: Path) -> set[Path]:
    out = subprocess.run(["ldd", str(path)], capture_output=True, text=True).stdout
    found: set[Path] = set()
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts:
            target = parts[parts.index("=>") + 1]
            if target.startswith("/"):
                found.add(Path(target))
        elif parts and parts[0].startswith("/"):
            found.add(Path(parts[0]))
    return found


def base_image() -> str:
    """The interpreter's image, built when missing."""
    prefix = Path(sys.base_prefix)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    executable = prefix / "bin" / f"python{version}"
    key = hashlib.sha256(f"{_LAYOUT}|{prefix}|{sys.version}|{executable.stat().st_mtime}".encode()).hexdigest()[:12]
    ref = f"jobdock-test/python-base:{version}-{key}"
    if _exists(ref):
        return ref
    stdlib = prefix / "lib" / f"python{version}"
    with tempfile.TemporaryDirectory(prefix="jobdock-pyimg-") as work:
        archive = Path(work) / "rootfs.tar"
        libs = _ldd(executable)
        dynload = stdlib / "lib-dynload"
        for so in dynload.glob("*.so"):
            libs |= _ldd(so)
        with tarfile.open(archive, "w") as tar:

            def add(src: Path, dest: str) -> None:
                info = tar.gettarinfo(str(src.resolve()), arcname=dest.lstrip("/"))
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with open(src.resolve(), "rb") as f:
                    tar.addfile(info, f)

            def add_dir(name: str, mode: int = 0o755) -> None:
                info = tarfile.TarInfo(name.lstrip("/"))
                info.type = tarfile.DIRTYPE
                info.mode = mode
                tar.addfile(info)

            for d in ("tmp", "etc", "bin", "opt", "usr", "usr/bin", "run", "proc", "sys", "dev"):
                add_dir(d, 0o1777 if d == "tmp" else 0o755)
            add(executable, str(executable))
            for lib in sorted(libs):
                add(lib, str(lib))
            for root, dirs, files in os.walk(stdlib):
                dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.startswith("config-")]
                rel = Path(root)
                add_dir(str(rel))
                for name in files:
                    if name.endswith((".py", ".so")):
                        add(rel / name, str(rel / name))
            link = tarfile.TarInfo("usr/bin/python3")
            link.type = tarfile.SYMTYPE
            link.linkname = str(executable)
            tar.addfile(link)
            for name, text in {"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n"
                                             "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
                               "etc/group": "root:x:0:\nnogroup:x:65534:\n"}.items():
                data = text.encode()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
        temp_ref = f"{ref}-build-{os.getpid()}"
        _docker("import", "--change", f"ENV PATH=/usr/bin:{prefix}/bin",
                "--change", 'CMD ["python3"]', str(archive), temp_ref)
    if not _exists(ref):
        _docker("tag", temp_ref, ref)
    _docker("rmi", temp_ref, check=False)
    return ref


def sdk_image() -> str:
    """The base image with the SDK of this working tree, built when missing."""
    digest = hashlib.sha256()
    for path in sorted(SDK_SRC.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(SDK_SRC)).encode())
            digest.update(path.read_bytes())
    ref = f"jobdock-test/python-sdk:{digest.hexdigest()[:12]}"
    if _exists(ref):
        return ref
    base = base_image()
    container = _docker("create", base).stdout.strip()
    try:
        with tempfile.TemporaryDirectory(prefix="jobdock-sdkimg-") as work:
            staged = Path(work) / "jobdock-sdk"
            shutil.copytree(SDK_SRC, staged, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            _docker("cp", str(staged), f"{container}:/opt/jobdock-sdk")
        _docker("commit", "--change", "ENV PYTHONPATH=/opt/jobdock-sdk",
                "--change", "ENV PYTHONUNBUFFERED=1", container, ref)
    finally:
        _docker("rm", "-f", container, check=False)
    return ref
