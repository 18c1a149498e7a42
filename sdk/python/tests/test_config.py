"""config(), secret() and current_run(): the environment, the secrets directory, defaults,
casts, and errors that name what is missing without showing a secret's value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import jobdock
from jobdock import log


def test_config_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUSTOMER", "acme")
    assert jobdock.config("CUSTOMER") == "acme"


def test_config_default_is_returned_as_given_when_missing() -> None:
    assert jobdock.config("BATCH", default=100, cast=int) == 100
    assert jobdock.config("BATCH", default=None) is None


def test_config_casts_a_set_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH", "250")
    monkeypatch.setenv("RATIO", "0.5")
    monkeypatch.setenv("TABLES", '["a", "b"]')
    assert jobdock.config("BATCH", default=100, cast=int) == 250
    assert jobdock.config("RATIO", cast=float) == 0.5
    assert jobdock.config("TABLES", cast=json.loads) == ["a", "b"]


@pytest.mark.parametrize("text,expected", [
    ("1", True), ("true", True), ("TRUE", True), ("yes", True), ("on", True), (" y ", True),
    ("0", False), ("false", False), ("No", False), ("off", False), ("n", False),
])
def test_config_bool_understands_the_usual_words(
    monkeypatch: pytest.MonkeyPatch, text: str, expected: bool
) -> None:
    monkeypatch.setenv("DRY_RUN", text)
    assert jobdock.config("DRY_RUN", default=False, cast=bool) is expected


def test_config_bool_refuses_anything_else(monkeypatch: pytest.MonkeyPatch) -> None:
    # bool("false") is True in Python: the SDK must not fall into that.
    monkeypatch.setenv("DRY_RUN", "maybe")
    with pytest.raises(jobdock.InvalidConfig) as err:
        jobdock.config("DRY_RUN", cast=bool)
    assert err.value.name == "DRY_RUN"
    assert "DRY_RUN" in str(err.value) and "maybe" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_config_cast_failure_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH", "lots")
    with pytest.raises(jobdock.InvalidConfig, match=r"BATCH='lots' could not be converted by int"):
        jobdock.config("BATCH", default=100, cast=int)


def test_missing_config_names_the_variable_and_how_to_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBDOCK_JOB", "orders")
    with pytest.raises(jobdock.MissingConfig) as err:
        jobdock.config("WAREHOUSE_URL")
    text = str(err.value)
    assert err.value.name == "WAREHOUSE_URL"
    assert "WAREHOUSE_URL is not set" in text
    assert "env" in text and "jobdock secrets set orders WAREHOUSE_URL" in text
    assert isinstance(err.value, LookupError)


def test_an_empty_variable_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUFFIX", "")
    assert jobdock.config("SUFFIX", default="x") == ""


def test_secret_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERP_PASSWORD", "hunter2-env")
    assert jobdock.secret("ERP_PASSWORD") == "hunter2-env"


def test_secret_from_a_file_exactly_as_stored(clean_env: Path) -> None:
    (clean_env / "ERP_PASSWORD").write_text("from-file\n  with space ")
    assert jobdock.secret("ERP_PASSWORD") == "from-file\n  with space "


def test_the_file_wins_over_the_environment(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", "from-env")
    (clean_env / "API_KEY").write_text("from-file")
    assert jobdock.secret("API_KEY") == "from-file"


def test_the_secrets_directory_defaults_to_run_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBDOCK_SECRETS_DIR")
    assert str(jobdock.secrets_dir()) == "/run/secrets"


def test_missing_secret_says_where_it_looked_and_how_to_set_it(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBDOCK_JOB", "customer-a-orders")
    with pytest.raises(jobdock.MissingSecret) as err:
        jobdock.secret("ERP_PASSWORD")
    text = str(err.value)
    assert err.value.name == "ERP_PASSWORD"
    assert "environment variable ERP_PASSWORD" in text
    assert str(clean_env / "ERP_PASSWORD") in text
    assert "jobdock secrets set customer-a-orders ERP_PASSWORD" in text
    assert isinstance(err.value, jobdock.MissingConfig)


def test_missing_secret_outside_a_run_names_a_placeholder_job() -> None:
    with pytest.raises(jobdock.MissingSecret, match="jobdock secrets set JOB TOKEN"):
        jobdock.secret("TOKEN")


def test_secret_default() -> None:
    assert jobdock.secret("OPTIONAL_KEY", default=None) is None


@pytest.mark.parametrize("name", ["", "../etc/passwd", "a/b", ".."])
def test_secret_names_cannot_leave_the_directory(name: str) -> None:
    with pytest.raises(ValueError):
        jobdock.secret(name)


def test_a_secret_read_is_masked_in_log_lines(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (clean_env / "DB_PASSWORD").write_text("s3cr3t-value")
    value = jobdock.secret("DB_PASSWORD")
    log.info(f"connecting with {value}", password=value)
    out = capsys.readouterr().out
    assert "s3cr3t-value" not in out
    assert out.count("***") == 2


def test_current_run(monkeypatch: pytest.MonkeyPatch) -> None:
    assert jobdock.current_run() == jobdock.Run(id=None, job=None, attempt=1)
    assert not jobdock.current_run().inside_jobdock
    monkeypatch.setenv("JOBDOCK_RUN_ID", "run-1")
    monkeypatch.setenv("JOBDOCK_JOB", "orders")
    monkeypatch.setenv("JOBDOCK_ATTEMPT", "3")
    run = jobdock.current_run()
    assert (run.id, run.job, run.attempt, run.inside_jobdock) == ("run-1", "orders", 3, True)
