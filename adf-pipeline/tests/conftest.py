"""Fixtures of the Data Factory template tests: the pipeline files, a live engine running real
containers (tests/support/python/jobdock_live.py), a fake Azure Key Vault, a receiver for
Webhook callbacks, and a replay runtime wired to them."""

from __future__ import annotations

import json
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support" / "python"))
sys.path.insert(0, str(HERE))

import adf_runtime  # noqa: E402
from jobdock_live import Engine, binary_from_env, busybox_image, engine  # noqa: E402

PIPELINES_DIR = ROOT / "adf-pipeline" / "pipelines"
TEMPLATES_DIR = ROOT / "adf-pipeline" / "templates"
SECRET_NAME = "jobdock-adf"
KEY_VAULT_LINKED_SERVICE = "JobdockKeyVault"

# The jobs the replays run. adf-ok prints its env overrides (to prove they arrive), adf-fail
# exits 3, adf-slow outlasts any wait of the tests.
JOBS = {
    "adf-ok": ["sh", "-c", 'echo "customer=$CUSTOMER"; echo "note=$NOTE"'],
    "adf-fail": ["sh", "-c", 'echo "failing for $CUSTOMER" >&2; exit 3'],
    # Ends at once on SIGTERM (a shell as PID 1 would ignore it), so a cancel is quick.
    "adf-slow": ["sh", "-c", "trap 'exit 143' TERM; echo started; sleep 120 & wait"],
}


def msi_token(resource: str) -> str:
    """The token the factory's managed identity would present for `resource`."""
    return f"fake-msi-token-for:{resource}"


def load_pipelines() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(PIPELINES_DIR.glob("*.json"))}


@pytest.fixture(scope="session")
def pipelines() -> dict[str, dict[str, Any]]:
    return load_pipelines()


@pytest.fixture(scope="session")
def jobdock() -> Iterator[Engine]:
    # Callbacks go to the local receiver, on http: the engine must allow the loopback host.
    with engine(binary_from_env(), env={"JOBDOCK_CALLBACK_ALLOWED_HOSTS": "127.0.0.1"}) as jd:
        image = busybox_image()
        for name, command in JOBS.items():
            status, _, body = jd.request("POST", "/api/v1/jobs", {"name": name, "image": image, "command": command})
            assert status == 201, f"creating job {name}: {status} {body}"
        yield jd


@pytest.fixture(scope="session")
def adf_token(jobdock: Engine) -> str:
    """The token Data Factory holds: trigger scope, for the test jobs only (least privilege,
    as the README recommends)."""
    status, _, body = jobdock.request(
        "POST", "/api/v1/tokens", {"name": "adf-replay", "scope": "trigger", "jobs": ["adf-*"]}
    )
    assert status == 201, f"creating the Data Factory token: {status}"
    return body["token"]


class FakeKeyVault:
    """Azure Key Vault's `GET {vault}/secrets/{name}?api-version=…`, answering `{"value": …}`
    to a caller with the managed identity's token for https://vault.azure.net."""

    def __init__(self, secrets: dict[str, str]):
        self.secrets = secrets
        self.requests: list[dict[str, Any]] = []
        vault = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                parts = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(parts.query)
                vault.requests.append({"path": parts.path, "query": query})
                name = urllib.parse.unquote(parts.path.removeprefix("/secrets/"))
                if self.headers.get("Authorization") != "Bearer " + msi_token("https://vault.azure.net"):
                    return self.answer(401, {"error": {"code": "Unauthorized"}})
                if query.get("api-version") != ["7.4"] or not parts.path.startswith("/secrets/"):
                    return self.answer(400, {"error": {"code": "BadParameter"}})
                if name not in vault.secrets:
                    return self.answer(404, {"error": {"code": "SecretNotFound"}})
                self.answer(200, {"value": vault.secrets[name], "id": f"{vault.url}/secrets/{name}/1", "attributes": {"enabled": True}})

            def answer(self, status: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def key_vault(adf_token: str) -> Iterator[FakeKeyVault]:
    kv = FakeKeyVault({SECRET_NAME: adf_token})
    yield kv
    kv.close()


@pytest.fixture(scope="session")
def callbacks() -> Iterator[adf_runtime.CallbackReceiver]:
    receiver = adf_runtime.CallbackReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def make_runtime(pipelines, key_vault, callbacks):
    """A new replay runtime over (possibly changed) pipelines."""

    def make(overrides: dict[str, dict[str, Any]] | None = None, **kwargs: Any) -> adf_runtime.Runtime:
        return adf_runtime.Runtime(
            {**pipelines, **(overrides or {})},
            msi_token=msi_token,
            linked_services={KEY_VAULT_LINKED_SERVICE: {"type": "AzureKeyVault", "baseUrl": key_vault.url + "/"}},
            callbacks=callbacks,
            **kwargs,
        )

    return make


@pytest.fixture
def base_params(jobdock: Engine, key_vault: FakeKeyVault) -> dict[str, Any]:
    """Parameters every template takes. The URLs end with `/` on purpose: the templates must
    not make `//` paths of them."""
    return {
        "jobdockUrl": jobdock.url + "/",
        "keyVaultUrl": key_vault.url + "/",
        "tokenSecretName": SECRET_NAME,
    }
