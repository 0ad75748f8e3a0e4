"""Settings from `BUTLER_*` variables: defaults, parsing and errors that name the variable."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from adapters.bootstrap.settings import DEFAULT_LLM_URL, Settings, SettingsError
from adapters.bootstrap.wiring import make_transcriber
from adapters.stt.config import SttSettings
from adapters.stt.whisper import WhisperTranscriber
from engine.errors import ConfigurationError


def test_defaults_live_under_xdg_data_home(tmp_path: Path) -> None:
    s = Settings.from_env({"XDG_DATA_HOME": str(tmp_path)})
    assert s.data_dir == tmp_path / "butler"
    assert s.store == str(tmp_path / "butler" / "butler.sqlite3")
    assert s.sqlite_path == tmp_path / "butler" / "butler.sqlite3"
    assert s.llm_urls == (DEFAULT_LLM_URL,) == ("http://127.0.0.1:8080/v1",)
    assert s.llm_model == ""
    assert s.llm_api_key == ""
    assert s.tokenizer == ""
    assert s.llm_retries == 2
    assert s.retention_days == 90
    assert s.log_level == "WARNING"
    assert s.budget.total == 2000
    assert s.policy.threshold == 50
    assert s.actors.mailbox_capacity == 32


def test_without_xdg_the_data_dir_is_in_the_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    s = Settings.from_env({})
    assert s.data_dir == tmp_path / ".local" / "share" / "butler"


def test_data_dir_and_store_can_be_set(tmp_path: Path) -> None:
    s = Settings.from_env({"BUTLER_DATA_DIR": str(tmp_path / "d")})
    assert s.data_dir == tmp_path / "d"
    assert s.store == str(tmp_path / "d" / "butler.sqlite3")
    s = Settings.from_env({"BUTLER_STORE": "mongodb://db:27017/butler"})
    assert s.store == "mongodb://db:27017/butler"


def test_api_key_is_not_in_the_repr() -> None:
    s = Settings.from_env({"BUTLER_LLM_API_KEY": "sk-secret", "XDG_DATA_HOME": "/x"})
    assert s.llm_api_key == "sk-secret"
    assert "sk-secret" not in repr(s)


def test_llm_urls_are_comma_separated_and_cleaned() -> None:
    s = Settings.from_env(
        {"BUTLER_LLM_URL": " http://a:8080/v1/ , https://b.example/v1,http://c/v1//"}
    )
    assert s.llm_urls == ("http://a:8080/v1", "https://b.example/v1", "http://c/v1")


def test_blank_llm_url_means_the_default() -> None:
    assert Settings.from_env({"BUTLER_LLM_URL": "   "}).llm_urls == (DEFAULT_LLM_URL,)


@pytest.mark.parametrize(
    "value", ["ftp://a/v1", "a:8080", "http://a/v1,", "http://a/v1,,http://b/v1"]
)
def test_bad_llm_urls_raise(value: str) -> None:
    with pytest.raises(SettingsError, match="BUTLER_LLM_URL"):
        Settings.from_env({"BUTLER_LLM_URL": value})


def test_numbers_are_parsed() -> None:
    s = Settings.from_env(
        {
            "BUTLER_LLM_RETRIES": "0",
            "BUTLER_BUDGET_TOTAL": " 4000 ",
            "BUTLER_BUDGET_SUMMARY": "250",
            "BUTLER_MEMORY_KEEP": "10",
            "BUTLER_LLM_READ_TIMEOUT_S": "12.5",
            "BUTLER_LLM_COOLDOWN_S": "5",
            "BUTLER_LOG_LEVEL": "debug",
        }
    )
    assert s.llm_retries == 0
    assert s.budget.total == 4000
    assert s.budget.summary == s.policy.summary_budget == 250
    assert s.policy.keep_last == s.actors.recent_events == 10
    assert s.llm_read_timeout_s == 12.5
    assert s.actors.breaker_cooldown_s == 5.0
    assert s.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BUTLER_BUDGET_TOTAL", "lots"),
        ("BUTLER_BUDGET_TOTAL", "0"),
        ("BUTLER_BUDGET_MEMORY", "-1"),
        ("BUTLER_MAILBOX_CAPACITY", "1.5"),
        ("BUTLER_RETENTION_DAYS", "0"),
        ("BUTLER_LLM_RETRIES", "-1"),
        ("BUTLER_LLM_READ_TIMEOUT_S", "soon"),
        ("BUTLER_LLM_TOTAL_TIMEOUT_S", "0"),
        ("BUTLER_IDLE_TIMEOUT_S", "-3"),
    ],
)
def test_bad_values_name_their_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


@pytest.mark.parametrize(
    ("store", "path"),
    [
        ("sqlite:///x.db", Path("x.db")),
        ("sqlite:////var/lib/butler.db", Path("/var/lib/butler.db")),
        ("/srv/butler.sqlite3", Path("/srv/butler.sqlite3")),
        ("relative/b.sqlite3", Path("relative/b.sqlite3")),
    ],
)
def test_sqlite_path(store: str, path: Path) -> None:
    assert Settings(data_dir=Path("/d"), store=store).sqlite_path == path


@pytest.mark.parametrize("store", ["mongodb://db:27017/butler", "mongodb+srv://c.example/b"])
def test_mongodb_has_no_sqlite_path(store: str) -> None:
    assert Settings(data_dir=Path("/d"), store=store).sqlite_path is None


@pytest.mark.parametrize(
    ("value", "expected"), [("", False), ("0", False), ("off", False), ("1", True), ("TRUE", True)]
)
def test_redact_memory_flag(value: str, expected: bool) -> None:
    settings = Settings.from_env({"BUTLER_REDACT_MEMORY": value, "HOME": "/tmp"})
    assert settings.actors.redact_memory is expected


def test_bad_flag_names_its_variable() -> None:
    with pytest.raises(SettingsError, match="BUTLER_REDACT_MEMORY"):
        Settings.from_env({"BUTLER_REDACT_MEMORY": "maybe"})


def test_worker_and_admin_settings() -> None:
    settings = Settings.from_env(
        {
            "HOME": "/tmp",
            "BUTLER_WORKER_INTERVAL_S": "30",
            "BUTLER_WORKER_IDLE_S": "120",
            "BUTLER_WORKER_METRICS_FILE": "/var/lib/node_exporter/butler.prom",
            "BUTLER_ADMIN_URL": "http://10.0.0.5:8377/",
            "BUTLER_ADMIN_TOKEN": "hunter2",
        }
    )
    assert (settings.worker_interval_s, settings.worker_idle_s) == (30.0, 120.0)
    assert settings.worker_metrics_file == "/var/lib/node_exporter/butler.prom"
    assert settings.admin_url == "http://10.0.0.5:8377"
    assert settings.admin_token == "hunter2"
    assert "hunter2" not in repr(settings)
    defaults = Settings.from_env({"HOME": "/tmp"})
    assert defaults.admin_url == "http://127.0.0.1:8377"
    assert defaults.llm_local_model == ""


def test_local_model_must_be_a_ctranslate2_directory(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"BUTLER_LLM_LOCAL_MODEL: .* not a CTranslate2"):
        Settings.from_env({"BUTLER_LLM_LOCAL_MODEL": str(tmp_path)})
    (tmp_path / "model.bin").write_bytes(b"")
    (tmp_path / "tokenizer.json").write_text("{}")
    settings = Settings.from_env({"BUTLER_LLM_LOCAL_MODEL": str(tmp_path), "HOME": "/tmp"})
    assert settings.llm_local_model == str(tmp_path)


def test_local_model_without_the_extra_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "model.bin").write_bytes(b"")
    (tmp_path / "tokenizer.json").write_text("{}")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ctranslate2" else real(name)
    )
    with pytest.raises(SettingsError, match=r"butler\[local-llm\]"):
        Settings.from_env({"BUTLER_LLM_LOCAL_MODEL": str(tmp_path)})


def test_speech_to_text_defaults_and_overrides() -> None:
    s = Settings.from_env({})
    assert s.stt == SttSettings()
    assert (s.stt.model, s.stt.max_seconds, s.stt.concurrency) == ("", 300.0, 1)
    assert (s.stt.threads, s.stt.beam_size, s.stt.wait_s) == (0, 1, 120.0)
    s = Settings.from_env(
        {
            "BUTLER_WHISPER_MODEL": " small ",
            "BUTLER_VOICE_MAX_SECONDS": "60",
            "BUTLER_STT_CONCURRENCY": "2",
            "BUTLER_STT_THREADS": "4",
            "BUTLER_STT_BEAM_SIZE": "5",
            "BUTLER_STT_WAIT_S": "30",
        }
    )
    assert s.stt == SttSettings("small", 60.0, 2, 4, 5, 30.0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BUTLER_VOICE_MAX_SECONDS", "0"),
        ("BUTLER_VOICE_MAX_SECONDS", "five"),
        ("BUTLER_STT_CONCURRENCY", "0"),
        ("BUTLER_STT_THREADS", "-1"),
        ("BUTLER_STT_BEAM_SIZE", "0"),
        ("BUTLER_STT_WAIT_S", "-3"),
    ],
)
def test_bad_speech_to_text_values_name_their_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_the_transcriber_is_built_cheaply_and_checks_its_model(tmp_path: Path) -> None:
    settings = Settings.from_env({"BUTLER_DATA_DIR": str(tmp_path)})
    transcriber = make_transcriber(settings)
    assert isinstance(transcriber, WhisperTranscriber)
    assert not transcriber.model.loaded
    assert not (tmp_path / "models").exists()  # assembled on the first voice note
    bad = Settings.from_env({"BUTLER_DATA_DIR": str(tmp_path), "BUTLER_WHISPER_MODEL": "nope"})
    with pytest.raises(ConfigurationError, match=r"BUTLER_WHISPER_MODEL=.nope."):
        make_transcriber(bad)
