"""Settings from `BUTLER_*` variables: defaults, parsing and errors that name the variable."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.bootstrap.settings import DEFAULT_LLM_URL, Settings, SettingsError
from adapters.bootstrap.wiring import Templates, make_transcriber
from adapters.stt.config import SttSettings
from adapters.stt.whisper import WhisperTranscriber
from engine.domain import EventIds, MemoryEvent, UserProfile
from engine.errors import ConfigurationError
from engine.prompt import PromptBuilder, fit_text
from engine.tokens import CalibratedEstimator

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
COUNTER = CalibratedEstimator()
TEMPLATES = Templates.load()


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
    with pytest.raises(SettingsError, match=r"pip install -e '\.\[local-llm\]'"):
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


def test_every_bad_variable_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(
            {"BUTLER_LLM_RETRIES": "many", "BUTLER_LOG_LEVEL": "verbose", "BUTLER_STT_WAIT_S": "0"}
        )
    lines = str(caught.value).splitlines()
    assert [line.partition(":")[0] for line in lines] == [
        "BUTLER_LLM_RETRIES",
        "BUTLER_STT_WAIT_S",
        "BUTLER_LOG_LEVEL",
    ]
    assert caught.value.problems == tuple(lines)
    assert "debug, info, warning, error, critical" in lines[2]
    assert "'verbose'" in lines[2]


@pytest.mark.parametrize("level", ["debug", "Info", "WARNING", "error", "critical"])
def test_log_levels_in_any_case(level: str) -> None:
    assert Settings.from_env({"BUTLER_LOG_LEVEL": level}).log_level == level.upper()


def test_a_misspelt_name_is_warned_with_the_closest_known_one() -> None:
    s = Settings.from_env(
        {
            "BUTLER_LLM_ULR": "http://x/v1",
            "BUTLER_TEST_MONGODB_URI": "mongodb://t",  # read by the tests, not by Butler
            "BUTLER_ZZZ": "1",
            "BUTLER_BUDGET_MESSAGE": "200",
            "PATH": "/bin",
        }
    )
    assert s.llm_urls == (DEFAULT_LLM_URL,)  # ignored, but no longer silently
    assert s.warnings == (
        "BUTLER_BUDGET_MESSAGE is no longer read: "
        "the message may use what the sections leave of the total",
        "unknown BUTLER_LLM_ULR (did you mean BUTLER_LLM_URL?)",
        "unknown BUTLER_ZZZ (see docs/configuration.md)",
    )
    assert Settings.from_env({"BUTLER_LLM_URL": "http://x/v1"}).warnings == ()


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e400"])
@pytest.mark.parametrize(
    "name", ["BUTLER_LLM_READ_TIMEOUT_S", "BUTLER_LLM_CACHE_TTL_S", "BUTLER_WORKER_IDLE_S"]
)
def test_non_finite_numbers_are_refused(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"{name}: expected a finite number"):
        Settings.from_env({name: value})


@pytest.mark.parametrize(
    "name",
    [
        "BUTLER_BUDGET_PERSONA",
        "BUTLER_BUDGET_SUMMARY",
        "BUTLER_BUDGET_MEMORY",
        "BUTLER_BUDGET_TOTAL",
        "BUTLER_BUDGET_REPLY",
    ],
)
@pytest.mark.parametrize("value", ["-5", "0", "1.5", "nan"])
def test_budgets_are_positive_integers(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_negative_or_zero_seconds_are_refused_and_a_zero_ttl_turns_the_cache_off() -> None:
    with pytest.raises(SettingsError, match="BUTLER_LLM_CACHE_TTL_S: must be at least 0"):
        Settings.from_env({"BUTLER_LLM_CACHE_TTL_S": "-1"})
    with pytest.raises(SettingsError, match="BUTLER_WORKER_INTERVAL_S: must be above 0"):
        Settings.from_env({"BUTLER_WORKER_INTERVAL_S": "0"})
    assert Settings.from_env({"BUTLER_LLM_CACHE_TTL_S": "0"}).actors.cache_ttl_s == 0.0


def test_a_total_without_room_for_a_message_is_refused_at_start() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"BUTLER_BUDGET_TOTAL": "10"})
    (problem,) = caught.value.problems
    # persona 200 + summary 300 + memory 800, and 4 tokens of markup around persona and message
    assert problem.startswith("BUTLER_BUDGET_TOTAL: 10 leaves no room for a message")
    assert "at least 1309" in problem
    low = {
        "BUTLER_BUDGET_PERSONA": "10",
        "BUTLER_BUDGET_SUMMARY": "10",
        "BUTLER_BUDGET_MEMORY": "10",
    }
    with pytest.raises(SettingsError, match="at least 39"):
        Settings.from_env({**low, "BUTLER_BUDGET_TOTAL": "38"})
    assert Settings.from_env({**low, "BUTLER_BUDGET_TOTAL": "39"}).budget.total == 39


def test_the_smallest_accepted_total_fits_every_section_at_full_budget_and_a_message() -> None:
    env = {"BUTLER_BUDGET_PERSONA": "60", "BUTLER_BUDGET_SUMMARY": "100"}
    env |= {"BUTLER_BUDGET_MEMORY": "100"}
    with pytest.raises(SettingsError, match="at least 269"):
        Settings.from_env({**env, "BUTLER_BUDGET_TOTAL": "268"})
    budget = Settings.from_env({**env, "BUTLER_BUDGET_TOTAL": "269"}).budget
    builder = PromptBuilder(TEMPLATES.persona, TEMPLATES.memory_summary, COUNTER, budget)
    # A summary as compression writes it: within what its section leaves for the body.
    summary = fit_text("facts " * 300, builder.summary_body_budget("en"), COUNTER)
    profile = UserProfile.new("7", NOW, language="en").with_summary(summary, "", NOW)
    ids, events = EventIds(), []
    for i in range(100):
        key, stamp = ids.next(NOW)
        events.append(MemoryEvent(key, "7", "user", f"event {i}", "text", stamp, tokens=3))
    prompt = builder.build(profile, events, "x", 1)  # raises MessageTooLong if it did not fit
    assert prompt.tokens.total <= budget.total
    assert prompt.tokens.persona > budget.persona  # cut to its budget, plus its markup
    assert prompt.tokens.memory > budget.memory - 8  # memory was not squeezed by the message
    assert budget.summary - 8 < prompt.tokens.summary <= budget.summary


@pytest.mark.parametrize(
    "store",
    [
        "postgres://user:pw@host/db",
        "postgresql+psycopg://user:pw@host:5432/db",
        "redis://:pw@cache:6379/0",
        "mysql://us@er:p@w@host/db",
    ],
)
def test_other_schemes_are_refused_without_the_password(store: str) -> None:
    with pytest.raises(SettingsError, match="BUTLER_STORE: unsupported scheme") as caught:
        Settings.from_env({"BUTLER_STORE": store})
    message = str(caught.value)
    assert "pw" not in message
    assert "p@w" not in message
    assert "***@" in message
    assert "sqlite:///" in message
    assert "mongodb" in message


@pytest.mark.parametrize(
    "store", ["sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite://host/x.db", "sqlite:x.db"]
)
def test_malformed_or_in_memory_sqlite_urls_are_refused(store: str) -> None:
    with pytest.raises(SettingsError, match=r"BUTLER_STORE: a SQLite URL is sqlite:///"):
        Settings.from_env({"BUTLER_STORE": store})


def test_sqlite_urls_read_as_sqlalchemy_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = Settings.from_env({"BUTLER_STORE": "sqlite:///sub/b.db"})
    assert relative.sqlite_path == tmp_path / "sub" / "b.db"  # three slashes: relative
    absolute = Settings.from_env({"BUTLER_STORE": "sqlite:////var/lib/b.db"})
    assert absolute.sqlite_path == Path("/var/lib/b.db")  # four: absolute
    plain = Settings.from_env({"BUTLER_STORE": "data/b.sqlite3"})
    assert plain.store == str(tmp_path / "data" / "b.sqlite3")  # resolved once, at start
    home = Settings.from_env({"BUTLER_STORE": "~/b.sqlite3", "HOME": "/ignored"})
    assert home.sqlite_path == Path.home() / "b.sqlite3"
    assert Settings.from_env({"BUTLER_STORE": "/srv/../srv/b.db"}).store == "/srv/b.db"


@pytest.mark.parametrize("store", ["mongodb://", "mongodb+srv://"])
def test_a_mongodb_uri_needs_a_host(store: str) -> None:
    with pytest.raises(SettingsError, match="BUTLER_STORE: a MongoDB URI needs a host"):
        Settings.from_env({"BUTLER_STORE": store})


@pytest.mark.parametrize(
    ("addr", "url"),
    [
        ("127.0.0.1:9000", "http://127.0.0.1:9000"),
        ("0.0.0.0:8377", "http://127.0.0.1:8377"),
        ("[::]:8377", "http://[::1]:8377"),
        ("[::1]:1234", "http://[::1]:1234"),
        ("admin.internal:80", "http://admin.internal:80"),
    ],
)
def test_the_admin_url_follows_the_admin_address(addr: str, url: str) -> None:
    s = Settings.from_env({"BUTLER_ADMIN_ADDR": addr})
    assert s.admin_url == url
    assert (
        Settings.from_env({"BUTLER_ADMIN_ADDR": addr, "BUTLER_ADMIN_URL": "http://h:1"}).admin_url
        == "http://h:1"
    )


def test_a_bad_admin_address_does_not_hide_a_bad_admin_url() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"BUTLER_ADMIN_ADDR": "nohost", "BUTLER_ADMIN_URL": "ftp://x"})
    assert [p.partition(":")[0] for p in caught.value.problems] == [
        "BUTLER_ADMIN_ADDR",
        "BUTLER_ADMIN_URL",
    ]


def test_url_errors_do_not_echo_credentials() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"BUTLER_TELEGRAM_API_URL": "ftp://bot:tok3n@api/"})
    assert "tok3n" not in str(caught.value)


def test_a_settings_error_of_one_problem_reads_as_one_line() -> None:
    error = SettingsError("BUTLER_X: expected a number")
    assert (str(error), error.problems, error.warnings) == (
        "BUTLER_X: expected a number",
        ("BUTLER_X: expected a number",),
        (),
    )


def test_personalization_is_on_by_default_and_the_kill_switch_turns_it_off() -> None:
    assert Settings.from_env({}).actors.personalization is True
    assert (
        Settings.from_env({"BUTLER_PERSONALIZATION_ENABLED": "0"}).actors.personalization is False
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PERSONALIZATION_ENABLED": "false"}, False),  # the seed's name, when ours is unset
        ({"PERSONALIZATION_ENABLED": "false", "BUTLER_PERSONALIZATION_ENABLED": ""}, False),
        ({"PERSONALIZATION_ENABLED": "false", "BUTLER_PERSONALIZATION_ENABLED": "1"}, True),
        ({"PERSONALIZATION_ENABLED": "1", "BUTLER_PERSONALIZATION_ENABLED": "off"}, False),
    ],
)
def test_the_seeds_bare_name_is_read_when_ours_is_unset(
    env: dict[str, str], expected: bool
) -> None:
    assert Settings.from_env(env).actors.personalization is expected


def test_a_bad_alias_value_names_the_alias() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"PERSONALIZATION_ENABLED": "maybe"})
    assert caught.value.problems[0].startswith("PERSONALIZATION_ENABLED: ")


def test_token_budgets_default_to_no_limit_and_refuse_negatives() -> None:
    limits = Settings.from_env({}).actors.token_limits
    assert (limits.daily, limits.monthly, limits.unlimited) == (0, 0, True)
    s = Settings.from_env({"BUTLER_TOKEN_BUDGET_DAILY": "5000", "BUTLER_TOKEN_BUDGET_MONTHLY": "1"})
    assert (s.actors.token_budget_daily, s.actors.token_budget_monthly) == (5000, 1)
    with pytest.raises(SettingsError, match="BUTLER_TOKEN_BUDGET_DAILY: must be at least 0"):
        Settings.from_env({"BUTLER_TOKEN_BUDGET_DAILY": "-5"})
