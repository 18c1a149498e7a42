"""The images the proof builds: a Debian Python base (debootstrap, then `docker import`:
no registry is reachable here), and Jobdock's base image on it, built by
templates/base-image/build with the SDK of this checkout. Each is tagged by what it is made
of, so a machine builds it once."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEBIAN_PYTHON = "jobdock-test/debian-python:bookworm-1"


def _exists(ref: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode == 0


def debian_python() -> str:
    """Debian bookworm's Python 3.11 with pip, as an image."""
    if _exists(DEBIAN_PYTHON):
        return DEBIAN_PYTHON
    if shutil.which("debootstrap") is None:
        raise AssertionError("debootstrap is missing: scripts/test installs it (Debian's package)")
    with tempfile.TemporaryDirectory(prefix="jobdock-debian-") as root:
        subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=python3,python3-pip,ca-certificates",
             "bookworm", root, "http://deb.debian.org/debian"],
            check=True, capture_output=True,
        )
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-", DEBIAN_PYTHON], stdin=tar.stdout, check=True,
                       capture_output=True)
        if tar.wait() != 0:
            raise AssertionError("tar of the Debian root failed")
    return DEBIAN_PYTHON


def jobdock_python() -> str:
    """Jobdock's base image built on the Debian Python, with this checkout's SDK."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "sdk/python/src").rglob("*.py")) + [
        REPO / "sdk/python/pyproject.toml", REPO / "templates/base-image/Dockerfile"
    ]:
        digest.update(path.read_bytes())
    ref = f"jobdock-test/jobdock-python:{digest.hexdigest()[:12]}"
    if _exists(ref):
        return ref
    base = debian_python()
    out = subprocess.run(
        [str(REPO / "templates/base-image/build"), ref],
        env={**os.environ, "PYTHON_IMAGE": base},
        capture_output=True, text=True,
    )
    if out.returncode != 0:
        raise AssertionError(f"the base image did not build:\n{out.stdout}\n{out.stderr}")
    return ref


def bridge_gateway() -> str:
    """The host's address on Docker's bridge, where containers reach this test's server."""
    out = subprocess.run(
        ["docker", "network", "inspect", "bridge", "-f",
         "{{range .IPAM.Config}}{{.Gateway}} {{.Subnet}}{{end}}"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    if out and out[0].count(".") == 3 and "/" not in out[0]:
        return out[0]
    subnet = next(p for p in out if "/" in p).split("/")[0]
    a, b, c, d = (int(x) for x in subnet.split("."))
    return f"{a}.{b}.{c}.{d + 1}"
