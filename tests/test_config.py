"""Configuration: typed, loaded once, every problem reported at once, tokens never shown."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from exporter.config import (
    DEFAULT_BASE_URL,
    AccountConfig,
    Buckets,
    Config,
    ConfigError,
    HttpConfig,
    LabelLimits,
    MetricsConfig,
    PollingConfig,
    Secret,
    StateConfig,
    WebConfig,
    config_from_mapping,
    format_duration,
    load_config,
    parse_duration,
    parse_listen_address,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "config"
EXAMPLE = ROOT / "config.example.yaml"
DOC = ROOT / "docs" / "configuration.md"
TOKEN = "neo-tok-3f9a7c1e5b2d4f60"
ENV = {"NEO_API_TOKEN": TOKEN, "EMPTY_TOKEN": ""}


def problems_of(path: Path, environ: typing.Mapping[str, str] = ENV) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), environ)
    return caught.value.problems


def minimal(**sections: object) -> dict[str, object]:
    """A valid config mapping with one account, plus the given sections."""
    return {"accounts": [{"name": "acme", "token": TOKEN}], **sections}


def mapping_problems(data: object, environ: typing.Mapping[str, str] = ENV) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(data, environ)
    return caught.value.problems


# --- one fixture per mistake ----------------------------------------------------------------

# fixture name -> (the key path its one problem names, a fragment of the message)
ONE_MISTAKE = {
    "unknown_key": ("polling.intervall", "unknown key (did you mean interval?"),
    "unknown_top_level_key": ("poling", "unknown key"),
    "unknown_account_key": ("accounts[0].base_ur", "unknown key (did you mean base_url?"),
    "missing_account_name": ("accounts[0].name", "missing"),
    "bad_account_name": ("accounts[0].name", "not a valid name"),
    "duplicate_account_names": ("accounts[1].name", "duplicate account name 'acme'"),
    "no_accounts": ("accounts", "no account configured"),
    "empty": ("accounts", "no account configured"),
    "accounts_not_a_list": ("accounts", "expected a list of accounts"),
    "account_not_a_mapping": ("accounts[0]", "expected a mapping"),
    "token_and_token_file": ("accounts[0].token", "both token and token_file"),
    "missing_token": ("accounts[0].token", "missing"),
    "empty_token": ("accounts[0].token", "is empty"),
    "token_file_missing": ("accounts[0].token_file", "cannot read"),
    "bad_duration": ("polling.interval", "expected a duration like 90s"),
    "zero_duration": ("polling.tasks_interval", "must be greater than 0"),
    "negative_duration": ("http.read_timeout", "must be greater than 0"),
    "lookback_shorter_than_interval": ("polling.lookback", "shorter than polling.interval"),
    "lookback_longer_than_window": ("polling.lookback", "longer than polling.window"),
    "catch_up_limit_longer_than_window": ("polling.catch_up_limit", "longer than polling.window"),
    "catch_up_limit_shorter_than_lookback": (
        "polling.catch_up_limit",
        "shorter than polling.lookback",
    ),
    "reconcile_shorter_than_interval": ("polling.reconcile_interval", "shorter than"),
    "unset_env_var": ("accounts[0].token", "environment variable ACME_NEO_TOKEN is not set"),
    "unterminated_env_var": ("accounts[0].base_url", "unterminated ${"),
    "bad_bucket_order": ("metrics.buckets.stream_duration[2]", "strictly increasing"),
    "bad_bucket_value": ("metrics.buckets.tool_call_duration[0]", "positive number"),
    "empty_buckets": ("metrics.buckets.step_latency", "is empty"),
    "bad_auth_header": ("accounts[0].auth_header", "expected bearer or x-api-key, got 'basic'"),
    "bad_base_url": ("accounts[0].base_url", "expected an http(s) URL"),
    "invalid_yaml": ("config", "invalid YAML"),
    "duplicate_yaml_key": ("config", "duplicate key 'interval'"),
    "top_level_not_a_mapping": ("config", "expected a mapping"),
    "section_not_a_mapping": ("polling", "expected a mapping"),
    "wrong_type": ("http.concurrency", "expected an integer, got 'four'"),
    "bool_as_integer": ("http.max_retries", "expected an integer, got a boolean"),
    "page_size_too_large": ("http.page_size", "from 1 to 200"),
    "concurrency_too_large": ("http.concurrency", "from 1 to 32"),
    "max_retries_too_large": ("http.max_retries", "from 0 to 20"),
    "negative_retry_budget": ("http.retry_budget", ">= 0"),
    "zero_max_pages": ("http.max_pages", ">= 1"),
    "backoff_max_below_base": ("http.backoff_max", "shorter than http.backoff_base"),
    "label_limit_out_of_range": ("metrics.label_limits.tool", "from 1 to 10000"),
    "bad_listen_address": ("web.listen_address", "expected [host]:port"),
    "empty_state_path": ("state.path", "is empty"),
    "alert_threshold_not_a_number": ("alerts.thresholds.hourly_credits", "expected a number"),
    "alert_threshold_negative": ("alerts.thresholds.hourly_usd", "is negative"),
    "alert_ratio_above_one": ("alerts.thresholds.error_ratio", "from 0 to 1"),
    "alert_threshold_bad_duration": (
        "alerts.thresholds.data_lag_seconds",
        "expected a duration like 90s",
    ),
    "unknown_alert_threshold": (
        "alerts.thresholds.hourly_credit",
        "unknown key (did you mean hourly_credits?",
    ),
    "unknown_account_alert_threshold": (
        "accounts[0].alert_thresholds.hourly_usd_spend",
        "unknown key (did you mean hourly_usd?",
    ),
    "account_alert_threshold_not_a_number": (
        "accounts[0].alert_thresholds.spend_spike_factor",
        "expected a number",
    ),
    "account_alert_thresholds_not_a_mapping": (
        "accounts[0].alert_thresholds",
        "expected a mapping",
    ),
    "task_titles_not_a_boolean": ("metrics.task_titles", "expected true or false"),
    "created_series_not_a_boolean": ("metrics.created_series", "expected true or false"),
    "telemetry_path_not_a_path": ("web.telemetry_path", "expected a path like /metrics"),
    "telemetry_path_reserved": ("web.telemetry_path", "which the server answers itself"),
    "max_connections_out_of_range": ("web.max_connections", "from 1 to 10000"),
    "zero_read_header_timeout": ("web.read_header_timeout", "must be greater than 0"),
    "team_not_a_list": ("teams.red", "expected a non-empty list of addresses or globs"),
    "team_named_unassigned": ("teams.unassigned", "the team of streams no team owns"),
    "team_pattern_not_a_string": ("teams.red[1]", "expected an address or a glob"),
    "budget_unknown_account": ("budgets[0].account", "no account is named 'acne'"),
    "budget_bad_period": ("budgets[0].period", "expected one of day, week, month"),
    "budget_credits_and_usd": ("budgets[0]", "exactly one of credits: or usd:"),
    "budget_zero_limit": ("budgets[0].usd", "expected a number > 0"),
    "budget_unknown_team": ("budgets[0].team", "no team is named 'blue' (teams: red)"),
    "budget_duplicate_name": ("budgets[1].name", "the name of an earlier budget"),
    "budget_missing_period": ("budgets[0].period", "missing"),
}
SEVERAL_MISTAKES = {
    "web.listen_address",
    "accounts[0].auth_header",
    "accounts[1].name",
    "accounts[1].token",
    "polling.intervall",
    "polling.lookback",
    "http.concurrency",
    "http.page_size",
    "metrics.buckets.stream_duration[2]",
    "state.path",
}


@pytest.mark.parametrize("name", sorted(ONE_MISTAKE))
def test_each_bad_fixture_gives_one_problem_naming_its_key(name: str) -> None:
    key, fragment = ONE_MISTAKE[name]
    problems = problems_of(FIXTURES / f"{name}.yaml")
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{key}: "), problems
    assert fragment in problems[0]


def test_every_fixture_is_checked() -> None:
    on_disk = {path.stem for path in FIXTURES.glob("*.yaml")}
    assert on_disk == set(ONE_MISTAKE) | {"several_mistakes"}


def test_a_config_with_several_mistakes_reports_all_of_them_at_once() -> None:
    problems = problems_of(FIXTURES / "several_mistakes.yaml")
    keys = {problem.split(": ", 1)[0] for problem in problems}
    assert keys == SEVERAL_MISTAKES
    assert len(problems) == len(SEVERAL_MISTAKES)


def test_config_error_text_lists_every_problem_one_per_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(str(FIXTURES / "several_mistakes.yaml"), ENV)
    assert str(caught.value).splitlines() == list(caught.value.problems)


def test_config_error_accepts_a_single_message() -> None:
    error = ConfigError("config: nothing")
    assert error.problems == ("config: nothing",)
    assert str(error) == "config: nothing"


def test_invalid_yaml_is_reported_with_its_line_number() -> None:
    (problem,) = problems_of(FIXTURES / "invalid_yaml.yaml")
    assert "at line 6, column" in problem
    assert "invalid_yaml.yaml" in problem


def test_unknown_key_lists_the_known_keys() -> None:
    (problem,) = problems_of(FIXTURES / "unknown_key.yaml")
    assert "known: interval, lookback, window, reconcile_interval, tasks_interval" in problem


def test_one_bad_field_does_not_cause_follow_on_problems() -> None:
    # interval is bad, so lookback >= interval cannot be checked and is not reported.
    problems = mapping_problems(minimal(polling={"interval": "soon", "lookback": "1s"}))
    assert [p.split(":")[0] for p in problems] == ["polling.interval"]


# --- files and the environment ---------------------------------------------------------------


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path / "nope.yaml")
    assert problem.startswith("config: cannot read ")
    assert "No such file" in problem


def test_a_directory_as_config_file_is_a_config_error(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path)
    assert problem.startswith("config: cannot read ")


def test_token_from_the_environment_alone_gives_one_default_account() -> None:
    config = load_config(None, {"NEO_API_TOKEN": f"  {TOKEN}\n"})
    assert config.accounts == (
        AccountConfig(
            name="default", base_url=DEFAULT_BASE_URL, token=Secret(TOKEN), auth_header="bearer"
        ),
    )
    assert config.polling == PollingConfig()
    assert config.http == HttpConfig()
    assert config.metrics == MetricsConfig()
    assert config.web == WebConfig()
    assert config.state == StateConfig()
    assert config.warnings == ()


def test_environment_mode_takes_url_and_auth_header_from_the_environment() -> None:
    config = load_config(
        None,
        {
            "NEO_API_TOKEN": TOKEN,
            "NEO_API_URL": "https://neo.example.com/",
            "NEO_API_AUTH_HEADER": "x-api-key",
        },
    )
    (account,) = config.accounts
    assert account.base_url == "https://neo.example.com"
    assert account.auth_header == "x-api-key"


def test_environment_mode_reports_bad_variables_by_name() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(
            None,
            {"NEO_API_TOKEN": TOKEN, "NEO_API_URL": "neo", "NEO_API_AUTH_HEADER": "basic"},
        )
    keys = [p.split(":")[0] for p in caught.value.problems]
    assert keys == ["NEO_API_URL", "NEO_API_AUTH_HEADER"]


def test_environment_values_are_not_interpolated() -> None:
    config = load_config(None, {"NEO_API_TOKEN": "${OTHER}"})
    assert config.accounts[0].token.reveal() == "${OTHER}"


def test_no_file_and_no_token_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {})
    assert caught.value.problems == (
        "config: no --config.file given and NEO_API_TOKEN is not set (to try the exporter "
        "without a token: neo-exporter --demo)",
    )


@pytest.mark.parametrize("token", ["", "  "])
def test_an_empty_token_in_the_environment_is_reported_as_empty_not_unset(token: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"NEO_API_TOKEN": token})
    assert caught.value.problems == (
        "config: no --config.file given and NEO_API_TOKEN is empty (expected the API token)",
    )


def test_token_file_is_read_relative_to_the_config_directory(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    token_file = tmp_path / "secrets" / "acme.token"
    token_file.write_text(f"\n{TOKEN}\n")
    token_file.chmod(0o600)
    config_file = tmp_path / "neo.yaml"
    config_file.write_text("accounts:\n  - name: acme\n    token_file: secrets/acme.token\n")
    config = load_config(str(config_file), {})
    assert config.accounts[0].token == Secret(TOKEN)
    assert config.warnings == ()


def test_token_file_relative_to_base_dir_when_loading_a_mapping(tmp_path: Path) -> None:
    (tmp_path / "acme.token").write_text(TOKEN)
    (tmp_path / "acme.token").chmod(0o400)
    data = {"accounts": [{"name": "acme", "token_file": "acme.token"}]}
    config = config_from_mapping(data, {}, base_dir=str(tmp_path))
    assert config.accounts[0].token.reveal() == TOKEN


def test_token_file_readable_by_others_gives_a_warning_naming_the_path(tmp_path: Path) -> None:
    token_file = tmp_path / "acme.token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o644)
    data = {"accounts": [{"name": "acme", "token_file": "acme.token"}]}
    config = config_from_mapping(data, {}, base_dir=str(tmp_path))
    (warning,) = config.warnings
    assert warning.startswith("accounts[0].token_file: ")
    assert str(token_file) in warning
    assert "0644" in warning
    assert TOKEN not in warning


def test_token_file_path_is_expanded_from_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "acme.token").write_text(TOKEN)
    (tmp_path / "acme.token").chmod(0o600)
    data = {"accounts": [{"name": "acme", "token_file": "~/acme.token"}]}
    config = config_from_mapping(data, {}, base_dir=os.sep)
    assert config.accounts[0].token.reveal() == TOKEN


def test_empty_token_file_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "acme.token").write_text(" \n")
    data = {"accounts": [{"name": "acme", "token_file": "acme.token"}]}
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(data, {}, base_dir=str(tmp_path))
    (problem,) = caught.value.problems
    assert problem.startswith("accounts[0].token_file: ")
    assert "is empty" in problem


# --- the example ------------------------------------------------------------------------------


def test_example_config_loads_and_equals_the_documented_defaults() -> None:
    config = load_config(str(EXAMPLE), {"NEO_API_TOKEN": TOKEN})
    assert config.web == WebConfig()
    assert config.polling == PollingConfig()
    assert config.http == HttpConfig()
    assert config.metrics == MetricsConfig(LabelLimits(), Buckets())
    assert config.state == StateConfig()
    assert config.accounts == (AccountConfig("default", DEFAULT_BASE_URL, Secret(TOKEN), "bearer"),)
    assert config.warnings == ()
    assert config == load_config(None, {"NEO_API_TOKEN": TOKEN})


def test_example_commented_second_account_is_valid(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    uncommented = re.sub(r"^  # ( ?[- ] )", r"  \1", text, flags=re.MULTILINE)
    assert "token_file: secrets/team-b.token" in uncommented.replace("#", "")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "team-b.token").write_text("team-b-token-1234")
    (tmp_path / "secrets" / "team-b.token").chmod(0o600)
    (tmp_path / "neo.yaml").write_text(uncommented)
    config = load_config(str(tmp_path / "neo.yaml"), {"NEO_API_TOKEN": TOKEN})
    assert [a.name for a in config.accounts] == ["default", "team-b"]
    assert config.accounts[1].auth_header == "x-api-key"
    assert config.accounts[1].token.reveal() == "team-b-token-1234"


def test_example_commented_teams_and_budgets_are_valid() -> None:
    text = EXAMPLE.read_text()
    start = text.index("# Who spent it")
    # Keys and list items are commented with "# "; the prose comments above them stay.
    uncommented = text[:start] + re.sub(r"^# (?=[a-z]+:|\s)", "", text[start:], flags=re.MULTILINE)
    config = config_from_mapping(yaml.safe_load(uncommented), {"NEO_API_TOKEN": TOKEN})
    assert config.teams.names == ("red", "blue")
    assert config.teams.team_of("x@red.example.com") == "red"
    assert [(b.name, b.team, b.unit) for b in config.budgets] == [
        ("default-month", None, "credits"),
        ("red-week", "red", "usd"),
    ]


def test_example_config_without_the_token_names_the_variable() -> None:
    (problem,) = problems_of(EXAMPLE, {})
    assert problem.startswith("accounts[0].token: environment variable NEO_API_TOKEN is not set")


# --- interpolation ------------------------------------------------------------------------------


def test_env_var_default_is_used_when_the_variable_is_unset_or_empty() -> None:
    data = {"accounts": [{"name": "${NAME:-acme}", "token": "${T:-fallback-token}"}]}
    for environ in ({}, {"NAME": "", "T": ""}):
        (account,) = config_from_mapping(data, environ).accounts
        assert account.name == "acme"
        assert account.token.reveal() == "fallback-token"


def test_env_var_set_wins_over_the_default() -> None:
    data = {"accounts": [{"name": "${NAME:-acme}", "token": "${T:-fallback-token}"}]}
    (account,) = config_from_mapping(data, {"NAME": "beta", "T": TOKEN}).accounts
    assert (account.name, account.token.reveal()) == ("beta", TOKEN)


def test_double_dollar_escapes_a_literal_interpolation() -> None:
    config = config_from_mapping(
        minimal(state={"path": "/data/$${HOME}/$$x/${DIR}.db"}), {"DIR": "n"}
    )
    assert config.state.path == "/data/${HOME}/$$x/n.db"


def test_env_vars_fill_numbers_and_durations() -> None:
    data = minimal(
        http={"concurrency": "${CONC:-8}", "read_timeout": "${READ}"},
        metrics={"buckets": {"step_latency": ["${LOW}", 2, "1m"]}},
    )
    config = config_from_mapping(data, {"READ": "1m", "LOW": "0.5"})
    assert config.http.concurrency == 8
    assert config.http.read_timeout == 60.0
    assert config.metrics.buckets.step_latency == (0.5, 2.0, 60.0)


def test_every_unset_variable_is_reported_without_any_value() -> None:
    data = minimal(state={"path": "${A}/${B}/${C:-x}"})
    problems = mapping_problems(data, {"SECRET_VALUE": "hunter2hunter2"})
    assert [problem.split(" (")[0] for problem in problems] == [
        "state.path: environment variable A is not set",
        "state.path: environment variable B is not set",
    ]
    assert "hunter2" not in "".join(problems)


def test_the_same_unset_variable_twice_is_one_problem() -> None:
    problems = mapping_problems(minimal(state={"path": "${A}/${A}"}), {})
    assert len(problems) == 1


def test_a_bad_variable_reference_is_a_problem_that_does_not_echo_it() -> None:
    (problem,) = mapping_problems({"accounts": [{"name": "acme", "token": "${sk-abcdef123456}"}]})
    assert problem.startswith("accounts[0].token: bad variable reference")
    assert "abcdef123456" not in problem


# --- values ----------------------------------------------------------------------------------


def test_empty_sections_use_the_defaults() -> None:
    config = config_from_mapping(
        {
            "web": None,
            "polling": None,
            "http": None,
            "metrics": None,
            "state": None,
            "accounts": [{"name": "acme", "token": TOKEN}],
        },
        {},
    )
    assert config.polling == PollingConfig()
    assert config.metrics == MetricsConfig()


def test_base_url_trailing_slash_is_stripped_and_auth_header_case_ignored() -> None:
    data = {
        "accounts": [
            {
                "name": "a",
                "token": TOKEN,
                "base_url": "https://neo.example.com/api/",
                "auth_header": "X-API-Key",
            }
        ]
    }
    (account,) = config_from_mapping(data, {}).accounts
    assert account.base_url == "https://neo.example.com/api"
    assert account.auth_header == "x-api-key"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://neo.example.com",
        "https://",
        "neo.example.com",
        "https://neo.example.com:99999",
        "https://neo.example.com/?x=1",
        "https://neo example.com",
    ],
)
def test_base_url_must_be_http_with_a_host(url: str) -> None:
    (problem,) = mapping_problems({"accounts": [{"name": "a", "token": TOKEN, "base_url": url}]})
    assert problem.startswith("accounts[0].base_url: ")


def test_base_url_with_credentials_is_refused_without_echoing_them() -> None:
    data = {"accounts": [{"name": "a", "token": TOKEN, "base_url": "https://me:pa55word@neo.io"}]}
    (problem,) = mapping_problems(data)
    assert problem.startswith("accounts[0].base_url: must not contain credentials")
    assert "pa55word" not in problem


def test_plain_http_to_a_remote_host_is_a_warning_but_loopback_is_not() -> None:
    remote = {"accounts": [{"name": "a", "token": TOKEN, "base_url": "http://neo.example.com"}]}
    (warning,) = config_from_mapping(remote, {}).warnings
    assert warning.startswith("accounts[0].base_url: plain http")
    for host in ("127.0.0.1:8080", "localhost", "[::1]:80"):
        local = {"accounts": [{"name": "a", "token": TOKEN, "base_url": f"http://{host}"}]}
        assert config_from_mapping(local, {}).warnings == ()


def test_catch_up_limit_defaults_to_the_window() -> None:
    config = config_from_mapping(minimal(polling={"window": "2d"}), {})
    assert config.polling.catch_up_limit == 2 * 86400.0


def test_http_durations_accept_the_duration_syntax() -> None:
    config = config_from_mapping(
        minimal(http={"connect_timeout": "250ms", "backoff_base": 1, "backoff_max": "1m30s"}), {}
    )
    assert (config.http.connect_timeout, config.http.backoff_base) == (0.25, 1.0)
    assert config.http.backoff_max == 90.0


def test_numbers_given_as_strings_are_accepted() -> None:
    config = config_from_mapping(minimal(http={"page_size": "50"}), {})
    assert config.http.page_size == 50


def test_float_is_not_an_integer() -> None:
    (problem,) = mapping_problems(minimal(http={"max_pages": 2.5}))
    assert problem == "http.max_pages: expected an integer, got 2.5"


def test_every_bad_bucket_is_named() -> None:
    data = minimal(metrics={"buckets": {"stream_duration": [1, "x", 5, 5, 4, math.inf, -2]}})
    keys = [p.split(":")[0] for p in mapping_problems(data)]
    assert keys == [f"metrics.buckets.stream_duration[{i}]" for i in (1, 3, 4, 5, 6)]


def test_non_string_key_is_an_unknown_key() -> None:
    (problem,) = mapping_problems(minimal(polling={1: "x"}))
    assert problem.startswith("polling.1: unknown key")


def test_account_name_given_as_number_asks_for_quotes() -> None:
    (problem,) = mapping_problems({"accounts": [{"name": 7, "token": TOKEN}]})
    assert problem == "accounts[0].name: expected a string, got 7 (quote it)"


def test_dates_in_yaml_stay_strings(tmp_path: Path) -> None:
    path = tmp_path / "neo.yaml"
    path.write_text(f"accounts:\n  - name: 2024-01-01\n    token: {TOKEN}\n")
    assert load_config(str(path), {}).accounts[0].name == "2024-01-01"


def test_config_is_frozen_and_hashable() -> None:
    config = config_from_mapping(minimal(), {})
    assert hash(config) == hash(config_from_mapping(minimal(), {}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.polling.interval = 1.0  # type: ignore[misc]


# --- secrets ---------------------------------------------------------------------------------


def test_secret_never_shows_its_value() -> None:
    secret = Secret(TOKEN)
    assert repr(secret) == "Secret('***')"
    assert str(secret) == "***"
    assert f"{secret}" == "***"
    assert f"{secret!r}" == "Secret('***')"
    assert f"{secret:>5}" == "  ***"
    assert "%s %r" % (secret, secret) == "*** Secret('***')"  # noqa: UP031
    assert secret.reveal() == TOKEN


def test_token_with_undecodable_bytes_from_the_environment_is_refused() -> None:
    # os.environ holds bytes that are not UTF-8 as lone surrogates.
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"NEO_API_TOKEN": "abc\udcffdef"})
    assert caught.value.problems[0].startswith("NEO_API_TOKEN: contains whitespace or control")
    assert Secret("abc\udcff") != Secret("abc")


def test_secrets_are_equal_by_value_and_hashable() -> None:
    assert Secret(TOKEN) == Secret(TOKEN)
    assert Secret(TOKEN) != Secret("other-token")
    assert Secret(TOKEN) != TOKEN
    assert len({Secret(TOKEN), Secret(TOKEN)}) == 1


def test_config_repr_does_not_contain_the_token() -> None:
    config = load_config(str(EXAMPLE), {"NEO_API_TOKEN": TOKEN})
    assert TOKEN not in repr(config)
    assert TOKEN not in str(config)
    assert TOKEN not in f"{config.accounts[0]}"


def test_tokens_never_appear_in_problems_even_when_misused(tmp_path: Path) -> None:
    (tmp_path / "bad.token").write_text("line one\nline two secret-in-file-42")
    data = {
        "accounts": [
            {"name": "a", "token": TOKEN, "auth_header": "${NEO_API_TOKEN}"},
            {"name": "b", "token": "has a space-secret-99"},
            {"name": "c", "token_file": "bad.token"},
            {"name": "d", "token": 12345678, "base_url": "https://x:${NEO_API_TOKEN}@neo.io"},
        ],
        # A token pasted where it does not belong is blanked out of the message too.
        "http": {"concurrency": "${NEO_API_TOKEN}"},
        "state": {"path": ""},
    }
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(data, ENV, base_dir=str(tmp_path))
    error = caught.value
    assert len(error.problems) == 7
    for text in (str(error), repr(error), *error.problems):
        for secret in (TOKEN, "space-secret-99", "secret-in-file-42", "12345678"):
            assert secret not in text


def test_invalid_yaml_message_does_not_quote_the_offending_line(tmp_path: Path) -> None:
    path = tmp_path / "neo.yaml"
    path.write_text(f'accounts:\n  - name: a\n    token: "{TOKEN}\n')
    (problem,) = problems_of(path)
    assert "invalid YAML" in problem
    assert TOKEN not in problem


# --- parsers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1w", 604800.0),
        ("1h30m", 5400.0),
        ("1d2h3m4s", 93784.0),
        ("250ms", 0.25),
        ("1m500ms", 60.5),
        ("1.5h", 5400.0),
        (" 60s ", 60.0),
        ("60", 60.0),
        ("0.5", 0.5),
        ("1e3", 1000.0),
        ("0s", 0.0),
        (90, 90.0),
        (0.25, 0.25),
        (0, 0.0),
    ],
)
def test_parse_duration_accepts(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (True, "got a boolean (true)"),
        (False, "got a boolean (false)"),
        (None, "got nothing (null)"),
        ([1], "got a list"),
        ("", "got ''"),
        ("abc", "expected a duration like 90s"),
        ("5 minutes", "got '5 minutes'"),
        ("1H", "got '1H'"),
        ("1m1h", "largest to smallest"),
        ("1m1m", "each at most once"),
        ("h", "expected a duration"),
        ("1.h", "expected a duration"),
        ("-5m", "must be greater than 0"),
        (-1, "must be greater than 0"),
        ("+5", "expected a duration"),
        (math.inf, "not finite"),
        (math.nan, "not finite"),
        ("nan", "expected a duration"),
        ("inf", "expected a duration"),
        ("1" + "0" * 400, "not finite"),
        (10**400, "too large"),
    ],
)
def test_parse_duration_rejects_with_a_clear_message(value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        parse_duration(value)


@given(st.integers(min_value=0, max_value=10**9))
def test_formatted_durations_parse_back(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.text(max_size=30))
def test_parse_duration_raises_only_value_error(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError:
        return
    assert math.isfinite(seconds)
    assert seconds >= 0


@pytest.mark.parametrize(
    ("address", "parsed"),
    [
        (":9636", ("", 9636)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:9636", ("::1", 9636)),
        ("[::]:80", ("::", 80)),
        ("localhost:9636", ("localhost", 9636)),
        ("0.0.0.0:65535", ("0.0.0.0", 65535)),
    ],
)
def test_parse_listen_address_accepts(address: str, parsed: tuple[str, int]) -> None:
    assert parse_listen_address(address) == parsed


@pytest.mark.parametrize(
    "address",
    ["9636", "", ":", "host:", ":http", ":65536", "::1:9636", "[zz]:80", "a b:80", "[::1]"],
)
def test_parse_listen_address_rejects(address: str) -> None:
    with pytest.raises(ValueError, match=r"expected|IPv6|out of range"):
        parse_listen_address(address)


# --- robustness --------------------------------------------------------------------------------

KEYS = st.sampled_from(
    [
        "web",
        "accounts",
        "polling",
        "http",
        "metrics",
        "state",
        "name",
        "token",
        "token_file",
        "base_url",
        "auth_header",
        "interval",
        "lookback",
        "window",
        "page_size",
        "label_limits",
        "buckets",
        "stream_duration",
        "listen_address",
        "path",
        "bogus",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["1m", "${X}", "${X:-5}", "$${", "${", "http://h", "acme", "bearer"])
)
TREES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=25,
)


@given(TREES)
def test_any_input_gives_a_config_or_a_config_error(data: object) -> None:
    try:
        config = config_from_mapping(data, {"X": "7"}, base_dir="/nonexistent")
    except ConfigError as error:
        assert error.problems
        assert all(": " in problem for problem in error.problems)
    else:
        assert isinstance(config, Config)
        assert config.accounts


# --- the documentation cannot drift -------------------------------------------------------------

# YAML keys that are not dataclass fields, and fields that are not YAML keys.
YAML_ONLY_KEYS = {"accounts[].token_file", "budgets[].credits", "budgets[].usd"}
NOT_YAML_KEYS = {"warnings", "budgets[].unit", "budgets[].limit"}
# Mappings documented as one key (the keys of alerts.thresholds; team names).
MAPPING_KEYS = {"accounts[].alert_thresholds", "teams"}
DOTTED_KEY = re.compile(r"[a-z_]+(?:\[\])?(?:\.[a-z_]+)+")


def dataclass_keys(cls: type, prefix: str = "") -> set[str]:
    """Every leaf key path of a config dataclass, lists of accounts as `accounts[]`."""
    keys: set[str] = set()
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        path = f"{prefix}{field.name}"
        if field.name.startswith("_") or field.name in NOT_YAML_KEYS or path in NOT_YAML_KEYS:
            continue
        kind = hints[field.name]
        if path in MAPPING_KEYS:
            keys.add(path)
            continue
        if typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0]
            if dataclasses.is_dataclass(item):
                keys |= dataclass_keys(typing.cast(type, item), f"{path}[].")
                continue
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            keys |= dataclass_keys(kind, f"{path}.")
        else:
            keys.add(path)
    return keys


def example_keys() -> set[str]:
    def walk(data: object, prefix: str) -> set[str]:
        if isinstance(data, dict):
            return set().union(
                *(walk(v, f"{prefix}.{k}" if prefix else str(k)) for k, v in data.items())
            )
        if isinstance(data, list) and data and all(isinstance(i, dict) for i in data):
            return set().union(*(walk(item, f"{prefix}[]") for item in data))
        return {prefix}

    return walk(yaml.safe_load(EXAMPLE.read_text()), "")


def documented_keys() -> set[str]:
    cells = re.findall(r"^\|\s*`([^`]+)`\s*\|", DOC.read_text(), flags=re.MULTILINE)
    return {cell for cell in cells if DOTTED_KEY.fullmatch(cell) or cell in MAPPING_KEYS}


def test_configuration_doc_lists_every_key() -> None:
    keys = dataclass_keys(Config) | YAML_ONLY_KEYS
    assert "metrics.buckets.step_latency" in keys
    assert "accounts[].auth_header" in keys
    documented = documented_keys()
    assert keys - documented == set(), "keys missing from docs/configuration.md"
    assert documented - keys == set(), "docs/configuration.md lists keys the code does not have"
    in_example = example_keys()
    assert in_example <= keys, "config.example.yaml has keys the code does not have"
    # The only keys not set in the example are in the commented-out account, teams and
    # budgets (the example is the defaults).
    assert keys - in_example == {"accounts[].token_file", "accounts[].alert_thresholds"} | {
        key for key in keys if key.startswith(("teams", "budgets"))
    }
    assert re.search(r"^\s*#\s+token_file:", EXAMPLE.read_text(), flags=re.MULTILINE)
    assert re.search(r"^\s*#\s+alert_thresholds:", EXAMPLE.read_text(), flags=re.MULTILINE)


def test_configuration_doc_lists_every_cli_flag() -> None:
    text = DOC.read_text()
    for flag in (
        "--config.file",
        "--web.listen-address",
        "--log.level",
        "--log.format",
        "--check-config",
        "--once",
        "--once.state",
        "--once.timeout",
        "--web.config.file",
        "--demo",
        "--version",
    ):
        assert f"`{flag}" in text, flag
    # Every flag the command line defines, whatever the list above says.
    defined = set(re.findall(r'"(--[a-z][a-z.-]+)"', (ROOT / "exporter" / "cli.py").read_text()))
    assert defined and {f for f in defined if f"| `{f}" not in text} == set()


# --- teams and budgets ----------------------------------------------------------------------


def test_the_first_matching_team_owns_an_address_whatever_its_case() -> None:
    config = config_from_mapping(
        minimal(
            teams={
                "red": ["ana@example.com", "*@exämple.org"],
                "blue": ["bo@example.com", "*@example.com"],
            }
        ),
        ENV,
    )
    teams = config.teams
    assert teams.names == ("red", "blue")
    assert teams.team_of("ana@example.com") == "red"  # in both, red comes first
    assert teams.team_of("Ana@Example.COM") == "red"
    assert teams.team_of("zoë@exämple.org") == "red"  # a glob over a non-ASCII domain
    assert teams.team_of("cy@example.com") == "blue"
    assert teams.team_of("dee@elsewhere.net") == "unassigned"
    assert teams.team_of(None) == "unassigned"
    assert teams.team_of("") == "unassigned"


def test_budgets_are_read_with_their_unit_and_scopes() -> None:
    config = config_from_mapping(
        minimal(
            teams={"red": ["ana@example.com"]},
            budgets=[
                {"name": "acme-month", "account": "acme", "period": "month", "credits": 100000},
                {"name": "red-week", "account": "acme", "team": "red", "period": "week",
                 "usd": "12.5"},
                {"name": "sonnet-day", "account": "acme", "model": "claude-sonnet-4-5",
                 "period": "day", "credits": 50},
            ],
        ),
        ENV,
    )  # fmt: skip
    assert [(b.name, b.period, b.unit, b.limit, b.team, b.model) for b in config.budgets] == [
        ("acme-month", "month", "credits", 100000.0, None, None),
        ("red-week", "week", "usd", 12.5, "red", None),
        ("sonnet-day", "day", "credits", 50.0, None, "claude-sonnet-4-5"),
    ]


def test_no_teams_and_no_budgets_is_the_default() -> None:
    config = config_from_mapping(minimal(), ENV)
    assert config.teams.names == () and config.budgets == ()
    assert config.teams.team_of("ana@example.com") == "unassigned"
