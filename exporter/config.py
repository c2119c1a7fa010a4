"""Typed configuration, read once at start-up, with every problem reported at once.

`load_config(path, environ)` reads a YAML file (or, with no file, the `NEO_API_TOKEN`
environment variable alone) and returns a frozen `Config`. `config_from_mapping` does the
same from an already parsed mapping. Bad input never raises anything but `ConfigError`,
which carries one line per problem, each `key.path: what is wrong (what is expected)`.

Tokens are held in `Secret`, which never shows its value, and no problem or warning ever
contains a token: messages about tokens never echo them, and as a last guard every token
read is blanked out of every message before it leaves this module.
"""

from __future__ import annotations

import difflib
import fnmatch
import hmac
import ipaddress
import math
import os
import re
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import yaml

from exporter.api import MAX_PAGE_SIZE
from exporter.periods import PERIODS

DEFAULT_BASE_URL: Final = "https://neo.api.projectdiscovery.io"
AUTH_HEADERS: Final = ("bearer", "x-api-key")

T = TypeVar("T")


# --- values -------------------------------------------------------------------------------


class Secret:
    """A token: `reveal()` gives it; repr, str and format never do."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, format_spec: str) -> str:
        return format("***", format_spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(
            self._value.encode("utf-8", "surrogatepass"),
            other._value.encode("utf-8", "surrogatepass"),
        )

    def __hash__(self) -> int:
        return hash((Secret, self._value))


class ConfigError(Exception):
    """Every problem found in a configuration; `str()` lists them, one per line."""

    problems: tuple[str, ...]

    def __init__(self, problems: str | Iterable[str]) -> None:
        self.problems = (problems,) if isinstance(problems, str) else tuple(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


# --- the configuration --------------------------------------------------------------------


@dataclass(frozen=True)
class AlertThresholds:
    """What the shipped alerts compare against, per account (exported as neo_alert_threshold).

    The defaults are the numbers the rules had before thresholds moved into the config.
    """

    spend_spike_factor: float = 5.0
    spend_spike_floor_credits_per_hour: float = 100.0
    spend_spike_floor_usd_per_hour: float = 20.0
    hourly_credits: float = 1000.0
    hourly_usd: float = 200.0
    error_ratio: float = 0.25
    error_ratio_min_streams: float = 10.0
    data_lag_seconds: float = 1800.0
    spending_cap_warning_ratio: float = 0.8
    spending_cap_critical_ratio: float = 0.95
    credits_runout_horizon_seconds: float = 259200.0
    credits_expiry_horizon_seconds: float = 259200.0
    # NeoExporterAuditDrift: the self-audit's difference from Neo, as a share of Neo's figure.
    audit_drift_ratio: float = 0.005
    # NeoBudgetForecastOverrun: the forecast spend at the period's end, as a share of the
    # budget's limit; it waits until this share of the period has passed (no paging on a
    # period's first hours for a small spend).
    budget_forecast_ratio: float = 1.0
    budget_forecast_min_elapsed_ratio: float = 0.1
    # NeoBudgetExceeded: spend as a share of the limit.
    budget_exceeded_ratio: float = 1.0


@dataclass(frozen=True)
class AccountConfig:
    name: str
    base_url: str
    token: Secret
    auth_header: str  # "bearer" | "x-api-key"
    # alerts.thresholds with this account's own `alert_thresholds` laid over them.
    alert_thresholds: AlertThresholds = field(default_factory=AlertThresholds)


@dataclass(frozen=True)
class PollingConfig:
    interval: float = 60.0
    lookback: float = 3600.0
    window: float = 604800.0
    reconcile_interval: float = 3600.0
    tasks_interval: float = 300.0
    catch_up_limit: float = 604800.0
    # Account-level endpoints: each has its own refresh interval.
    summary_interval: float = 300.0
    user_interval: float = 300.0
    credits_interval: float = 900.0
    unavailable_retry_interval: float = 21600.0


@dataclass(frozen=True)
class HttpConfig:
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_retries: int = 5
    retry_budget: int = 50
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    concurrency: int = 4
    page_size: int = 200
    max_pages: int = 10000


@dataclass(frozen=True)
class LabelLimits:
    model: int = 50
    status: int = 20
    tool: int = 100
    agent: int = 50


@dataclass(frozen=True)
class Buckets:
    tool_call_duration: tuple[float, ...] = (
        0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    )  # fmt: skip
    stream_duration: tuple[float, ...] = (
        1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
    )  # fmt: skip
    step_latency: tuple[float, ...] = (
        0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
    )  # fmt: skip


@dataclass(frozen=True)
class MembersConfig:
    """Per-member spend (`email` label): personal data, so off unless asked for."""

    enabled: bool = False
    limit: int = 20


@dataclass(frozen=True)
class MetricsConfig:
    label_limits: LabelLimits = field(default_factory=LabelLimits)
    buckets: Buckets = field(default_factory=Buckets)
    members: MembersConfig = field(default_factory=MembersConfig)
    top_tasks: int = 10
    # Titles often name a scan target; off keeps them out of neo_top_task_credits.
    task_titles: bool = True
    # The `_created` samples of counters and histograms (client_python's
    # disable_created_metrics when false): about 40% of the series Prometheus stores.
    created_series: bool = True


@dataclass(frozen=True)
class WebConfig:
    listen_address: str = ":9636"
    # A connection that has not sent a whole request head this long after it was opened (or
    # after its last response, when kept alive) is closed, so slow clients cannot pile up.
    read_header_timeout: float = 10.0
    # Connections served at once, each by its own thread; beyond it, new connections wait
    # in the listen queue, and one still waiting for its request head is closed first.
    max_connections: int = 64
    # Where this repository's docs/ folder is published: the landing page links there.
    docs_url: str = ""
    # Where the metrics are served (--web.telemetry-path).
    telemetry_path: str = "/metrics"


@dataclass(frozen=True)
class AlertsConfig:
    thresholds: AlertThresholds = field(default_factory=AlertThresholds)


@dataclass(frozen=True)
class StateConfig:
    path: str = "neo-exporter.db"


@dataclass(frozen=True)
class AuditConfig:
    """The self-audit: Neo's own totals for a closed period, compared with what was counted."""

    interval: float = 3600.0  # 0 turns it off


UNASSIGNED_TEAM: Final = "unassigned"  # streams of no team's address, and with no email
BUDGET_UNITS: Final = ("credits", "usd")


@dataclass(frozen=True)
class TeamConfig:
    """One team: the addresses, or shell-style globs of them, whose streams it owns."""

    name: str
    patterns: tuple[str, ...]


@dataclass(frozen=True)
class TeamsConfig:
    """`teams:`, in config order: the first team with a matching pattern owns a stream."""

    teams: tuple[TeamConfig, ...] = ()
    _compiled: tuple[tuple[str, re.Pattern[str]], ...] = field(
        default=(), init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # Addresses compare without case, as mail systems do; globs are fnmatch's.
        compiled = tuple(
            (team.name, re.compile("|".join(_glob(p) for p in team.patterns)))
            for team in self.teams
            if team.patterns
        )
        object.__setattr__(self, "_compiled", compiled)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(team.name for team in self.teams)

    def team_of(self, email: str | None) -> str:
        """The team that owns a stream of this address; `unassigned` if none does."""
        if email:
            address = email.strip().casefold()
            for name, pattern in self._compiled:
                if pattern.fullmatch(address):
                    return name
        return UNASSIGNED_TEAM


def _glob(pattern: str) -> str:
    return fnmatch.translate(pattern.casefold())


@dataclass(frozen=True)
class BudgetConfig:
    """One budget: the spend of an account (of one team, or one model) over a UTC period."""

    name: str
    account: str
    period: str  # "day" | "week" (from Monday) | "month"
    unit: str  # "credits" (neo_credits) | "usd" (BYOK llm_cost)
    limit: float
    team: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class Config:
    web: WebConfig
    accounts: tuple[AccountConfig, ...]
    polling: PollingConfig
    http: HttpConfig
    metrics: MetricsConfig
    state: StateConfig
    audit: AuditConfig = field(default_factory=AuditConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    teams: TeamsConfig = field(default_factory=TeamsConfig)
    budgets: tuple[BudgetConfig, ...] = ()
    warnings: tuple[str, ...] = ()


def _keys(cls: type, *, add: tuple[str, ...] = (), drop: tuple[str, ...] = ()) -> tuple[str, ...]:
    names = tuple(f.name for f in fields(cls) if f.name not in drop)
    return names + add


# The YAML keys of each section: the dataclass fields, so the two cannot drift apart.
TOP_KEYS: Final = _keys(Config, drop=("warnings",))
ACCOUNT_KEYS: Final = _keys(AccountConfig, add=("token_file",))
WEB_KEYS: Final = _keys(WebConfig)
ALERTS_KEYS: Final = _keys(AlertsConfig)
THRESHOLD_KEYS: Final = _keys(AlertThresholds)
POLLING_KEYS: Final = _keys(PollingConfig)
HTTP_KEYS: Final = _keys(HttpConfig)
METRICS_KEYS: Final = _keys(MetricsConfig)
LABEL_LIMIT_KEYS: Final = _keys(LabelLimits)
BUCKET_KEYS: Final = _keys(Buckets)
MEMBERS_KEYS: Final = _keys(MembersConfig)
STATE_KEYS: Final = _keys(StateConfig)
BUDGET_KEYS: Final = ("name", "account", "period", "credits", "usd", "team", "model")
AUDIT_KEYS: Final = _keys(AuditConfig)

MAX_RETRIES: Final = 20
MAX_CONCURRENCY: Final = 32
MAX_LABEL_LIMIT: Final = 10000
MAX_TOP_TASKS: Final = 100  # one series per rank: bounded by design
MAX_MEMBERS: Final = 1000
MAX_CONNECTIONS: Final = 10000
# Thresholds that are shares (0 to 1); the others are any number >= 0.
RATIO_THRESHOLDS: Final = ("error_ratio", "audit_drift_ratio", "budget_forecast_min_elapsed_ratio")
# Thresholds in seconds: a duration (30m, 3d) or a number of seconds.
SECONDS_THRESHOLDS: Final = (
    "data_lag_seconds",
    "credits_runout_horizon_seconds",
    "credits_expiry_horizon_seconds",
)
ACCOUNT_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
INTEGER: Final = re.compile(r"[+-]?[0-9]+")
NUMBER: Final = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
DURATION_PART: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w)")
DURATION_UNITS: Final = (
    ("w", 604800.0),
    ("d", 86400.0),
    ("h", 3600.0),
    ("m", 60.0),
    ("s", 1.0),
    ("ms", 0.001),
)
DURATION_HINT: Final = "a duration like 90s, 5m, 1h30m or 250ms, or a number of seconds"
# One wording for every duration that is zero or negative.
DURATION_POSITIVE: Final = "must be greater than 0 (expected a duration like 90s, 5m or 250ms)"
DESCRIBE_MAX: Final = 200  # characters of a bad value shown in a message
VALUE_KINDS: Final = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (Mapping, "a mapping"),
    (list | tuple, "a list"),
)


# --- small parsers ------------------------------------------------------------------------


def _type_name(value: object) -> str:
    """A value's kind only, for tokens: never the value."""
    if value is None:
        return "nothing (null)"
    for kind, name in VALUE_KINDS:
        if isinstance(value, kind):
            return name
    return f"a {type(value).__name__}"


def _describe(value: object) -> str:
    """A bad value as a message shows it. Never used on tokens."""
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, str | int | float):
        text = repr(value)
        return text if len(text) <= DESCRIBE_MAX else text[:DESCRIBE_MAX] + "..."
    return _type_name(value)


def format_duration(seconds: float) -> str:
    """90.0 -> "1m30s", 0.25 -> "250ms": how messages show durations."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if not float(seconds).is_integer():
        return f"{seconds:g}s"
    rest = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _duration_from_units(text: str, shown: str) -> float:
    ranks = {unit: rank for rank, (unit, _) in enumerate(DURATION_UNITS)}
    sizes = dict(DURATION_UNITS)
    total = 0.0
    position = 0
    last_rank = -1
    while position < len(text):
        match = DURATION_PART.match(text, position)
        if match is None:
            raise ValueError(f"expected {DURATION_HINT}, got {_describe(shown)}")
        number, unit = match.groups()
        if ranks[unit] <= last_rank:
            raise ValueError(
                f"units must go from largest to smallest, each at most once "
                f"(expected e.g. 1h30m), got {_describe(shown)}"
            )
        last_rank = ranks[unit]
        total += float(number) * sizes[unit]
        position = match.end()
    return total


def parse_duration(value: object) -> float:
    """Seconds from "90s", "5m", "1h", "1d", "1h30m", "250ms", or a number of seconds.

    Units are ms, s, m, h, d and w, largest first, each at most once. Booleans, negative
    and non-finite values are rejected with a ValueError saying what was expected.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected {DURATION_HINT}, got {_describe(value)}")
    try:
        if isinstance(value, str):
            text = value.strip()
            if not text:
                raise ValueError(f"expected {DURATION_HINT}, got {_describe(value)}")
            # "-5m" parses, so that it can be called negative rather than malformed.
            body = text.removeprefix("-")
            seconds = float(body) if NUMBER.fullmatch(body) else _duration_from_units(body, value)
            if body != text:
                seconds = -seconds
        else:
            seconds = float(value)
    except OverflowError:
        raise ValueError(f"{_describe(value)} is too large (expected a finite duration)") from None
    if not math.isfinite(seconds):
        raise ValueError(f"{_describe(value)} is not finite (expected a finite duration)")
    if seconds < 0:
        raise ValueError(f"{DURATION_POSITIVE}, got {_describe(value)}")
    return seconds + 0.0  # -0.0 -> 0.0


def parse_listen_address(value: str) -> tuple[str, int]:
    """Host and port of a listen address.

    ":9636" -> ("", 9636) (every interface), "127.0.0.1:0", "[::1]:9636" -> ("::1", 9636).
    """
    expected = "expected [host]:port, like :9636, 127.0.0.1:9636 or [::1]:9636"
    if not isinstance(value, str):
        raise ValueError(f"{expected}, got {_describe(value)}")
    host, colon, port_text = value.rpartition(":")
    if not colon or not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"{expected}, got {_describe(value)}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} is out of range (expected 0 to 65535)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address ({expected})") from None
    elif ":" in host:
        raise ValueError(f"an IPv6 host must be in brackets ({expected}), got {value!r}")
    elif host and not re.fullmatch(r"[A-Za-z0-9_.-]+", host):
        raise ValueError(f"{expected}, got {_describe(value)}")
    return host, port


def _to_str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_describe(value)}")
    return value.strip()


def _to_int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    raise ValueError(f"expected an integer, got {_describe(value)}")


def _to_number(value: object) -> float:
    """A finite number: a YAML number, or a string of one (for ${VAR})."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and NUMBER.fullmatch(value.strip().removeprefix("-")):
        number = float(value.strip())
    else:
        raise ValueError(f"expected a number, got {_describe(value)}")
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {_describe(value)}")
    return number


def _to_threshold(key: str) -> Callable[[object], float]:
    """The parser of one alert threshold: seconds accept durations, ratios stay within 0-1."""

    def convert(value: object) -> float:
        if key in SECONDS_THRESHOLDS:
            return parse_duration(value)
        number = _to_number(value)
        if key in RATIO_THRESHOLDS and not 0 <= number <= 1:
            raise ValueError(f"{number:g} is out of range (expected a share from 0 to 1)")
        if number < 0:
            raise ValueError(f"{number:g} is negative (expected a number >= 0)")
        return number

    return convert


def _to_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"  # from ${VAR}
    raise ValueError(f"expected true or false, got {_describe(value)}")


def _to_name(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f"expected a string, got {_describe(value)} (quote it)")
    name = _to_str(value)
    if not ACCOUNT_NAME.fullmatch(name):
        raise ValueError(
            f"{_describe(name)} is not a valid name "
            "(expected 1 to 64 letters, digits, '.', '_' or '-')"
        )
    return name


def _to_base_url(value: object) -> str:
    text = _to_str(value)
    expected = f"expected an http(s) URL with a host, like {DEFAULT_BASE_URL}"
    if any(c.isspace() or not c.isprintable() for c in text):
        raise ValueError(f"contains whitespace or control characters ({expected})")
    try:
        parts = urlsplit(text)
        _ = parts.port
    except ValueError:
        raise ValueError(f"{_describe(text)} is not a valid URL ({expected})") from None
    if parts.username is not None or parts.password is not None:
        # Not echoed: whatever is before the @ may well be a credential.
        raise ValueError(f"must not contain credentials ({expected}; tokens go in token)")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{expected}, got {_describe(text)}")
    if parts.query or parts.fragment:
        raise ValueError(f"must not have a query or fragment ({expected}), got {_describe(text)}")
    return text.rstrip("/")


def _to_docs_url(value: object) -> str:
    text = _to_str(value)
    if not text:
        return ""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in text):
        raise ValueError(f"expected an http(s) URL, got {_describe(text)}")
    return text.rstrip("/")


# Paths the server answers itself: the metrics cannot move there.
RESERVED_PATHS: Final = ("/", "/-/healthy", "/-/ready")


def to_telemetry_path(value: object) -> str:
    text = _to_str(value)
    expected = "expected a path like /metrics"
    if not text.startswith("/") or any(c.isspace() or c in "?#" for c in text):
        raise ValueError(f"{expected}, got {_describe(value)}")
    if text in RESERVED_PATHS:
        raise ValueError(f"{expected}, got {_describe(value)}, which the server answers itself")
    return text


def _to_auth_header(value: object) -> str:
    text = _to_str(value).lower()
    if text not in AUTH_HEADERS:
        raise ValueError(f"expected bearer or x-api-key, got {_describe(value)}")
    return text


def _to_listen_address(value: object) -> str:
    text = _to_str(value)
    parse_listen_address(text)
    return text


def _to_path(value: object) -> str:
    text = _to_str(value)
    if not text:
        raise ValueError("is empty (expected a file path)")
    return text


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- reading, with every problem collected -------------------------------------------------


class _Reader:
    """One load: collects problems (and which key paths were bad), warnings and tokens."""

    def __init__(self, environ: Mapping[str, str], base_dir: str) -> None:
        self.environ = environ
        self.base_dir = base_dir
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.tokens: list[str] = []
        self.bad: set[str] = set()

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")
        self.bad.add(path)

    def ok(self, *paths: str) -> bool:
        return not self.bad.intersection(paths)

    def finish(self, config: Config) -> Config:
        def redact(text: str) -> str:
            for token in sorted(self.tokens, key=len, reverse=True):
                if len(token) >= 4:
                    text = text.replace(token, "***")
            return text

        if self.problems:
            # dict.fromkeys: the same ${VAR} twice in one value is one problem, in order.
            raise ConfigError(redact(p) for p in dict.fromkeys(self.problems))
        return replace(config, warnings=tuple(redact(w) for w in self.warnings))

    # -- strings and ${VAR} ----------------------------------------------------------------

    def interpolate(self, text: str, path: str) -> str | None:
        """`${VAR}`, `${VAR:-default}`, `$${` for a literal `${`; None after a problem."""
        out: list[str] = []
        failed = False
        position = 0
        while position < len(text):
            if text.startswith("$${", position):
                out.append("${")
                position += 3
                continue
            if not text.startswith("${", position):
                out.append(text[position])
                position += 1
                continue
            end = text.find("}", position + 2)
            if end == -1:
                self.problem(
                    path,
                    "unterminated ${ (expected ${VAR} or ${VAR:-default}; "
                    "write $${ for a literal ${)",
                )
                return None
            body = text[position + 2 : end]
            name, has_default, default = body.partition(":-")
            if not ENV_NAME.fullmatch(name) or "${" in default:
                # The reference itself is not echoed: it could hold a pasted token.
                self.problem(
                    path,
                    f"bad variable reference at character {position + 1} "
                    "(expected ${VAR} or ${VAR:-default}, VAR made of letters, digits and _; "
                    "no nesting; write $${ for a literal ${)",
                )
                failed = True
            else:
                value = self.environ.get(name)
                if value is None or (has_default and value == ""):
                    if has_default:
                        value = default
                    else:
                        self.problem(
                            path,
                            f"environment variable {name} is not set "
                            f"(expected it set, or a default: ${{{name}:-default}})",
                        )
                        failed = True
                out.append(value or "")
            position = end + 1
        return None if failed else "".join(out)

    def expand(self, value: object, path: str) -> tuple[bool, object]:
        """(ok, value with ${VAR} substituted if it is a string)."""
        if isinstance(value, str):
            text = self.interpolate(value, path)
            if text is None:
                self.bad.add(path)
                return False, None
            return True, text
        return True, value

    # -- sections and fields -----------------------------------------------------------------

    def section(self, value: object, path: str, known: tuple[str, ...]) -> dict[str, object]:
        """The known keys of a mapping (null is an empty section); unknown keys are problems."""
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problem(path, f"expected a mapping of {', '.join(known)}, got {_describe(value)}")
            return {}
        result: dict[str, object] = {}
        for key, item in value.items():
            if isinstance(key, str) and key in known:
                result[key] = item
                continue
            name = str(key)
            hint = ""
            close = difflib.get_close_matches(name, known, n=1)
            if close:
                hint = f"did you mean {close[0]}? "
            self.problem(_join(path, name), f"unknown key ({hint}known: {', '.join(known)})")
        return result

    def get(
        self,
        section: Mapping[str, object],
        path: str,
        key: str,
        convert: Callable[[object], T],
        default: T,
    ) -> T:
        """The converted value of `key`, or `default` if absent (or bad: then a problem)."""
        if key not in section:
            return default
        key_path = _join(path, key)
        ok, value = self.expand(section[key], key_path)
        if not ok:
            return default
        try:
            return convert(value)
        except ValueError as exc:
            self.problem(key_path, str(exc))
            return default

    def duration(self, section: Mapping[str, object], path: str, key: str, default: float) -> float:
        """A duration > 0."""
        seconds = self.get(section, path, key, parse_duration, default)
        key_path = _join(path, key)
        if self.ok(key_path) and seconds <= 0:
            self.problem(key_path, f"{DURATION_POSITIVE}, got {_describe(section[key])}")
            return default
        return seconds

    def integer(
        self,
        section: Mapping[str, object],
        path: str,
        key: str,
        default: int,
        *,
        low: int,
        high: int | None = None,
        why: str = "",
    ) -> int:
        number = self.get(section, path, key, _to_int, default)
        key_path = _join(path, key)
        if not self.ok(key_path):
            return default
        if number < low or (high is not None and number > high):
            expected = f"from {low} to {high}" if high is not None else f">= {low}"
            self.problem(
                key_path, f"{number} is out of range (expected an integer {expected}{why})"
            )
            return default
        return number

    def buckets(
        self, section: Mapping[str, object], path: str, key: str, default: tuple[float, ...]
    ) -> tuple[float, ...]:
        if key not in section:
            return default
        key_path = _join(path, key)
        ok, raw = self.expand(section[key], key_path)
        if not ok:
            return default
        expected = "expected a non-empty list of bucket upper bounds in seconds, like [0.5, 1, 5]"
        if not isinstance(raw, list | tuple):
            self.problem(key_path, f"{expected}, got {_describe(raw)}")
            return default
        if not raw:
            self.problem(key_path, f"is empty ({expected})")
            return default
        bounds: list[float] = []
        previous: float | None = None
        for index, item in enumerate(raw):
            item_path = f"{key_path}[{index}]"
            bound = self.get({"": item}, item_path, "", _to_bound, math.nan)
            if math.isnan(bound):
                previous = None
                continue
            if previous is not None and bound <= previous:
                self.problem(
                    item_path,
                    f"{bound:g} is not greater than the bound before it, {previous:g} "
                    "(expected strictly increasing bounds)",
                )
            bounds.append(bound)
            previous = bound
        return tuple(bounds)


def _join(path: str, key: str) -> str:
    if not key:
        return path
    return f"{path}.{key}" if path else key


def _to_bound(value: object) -> float:
    expected = "expected a positive number of seconds (+Inf is always added)"
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise ValueError(f"{expected}, got {_describe(value)}") from None
    if seconds <= 0:
        raise ValueError(f"{expected}, got {_describe(value)}")
    return seconds


# --- sections -------------------------------------------------------------------------------


def _web(reader: _Reader, value: object) -> WebConfig:
    section = reader.section(value, "web", WEB_KEYS)
    default = WebConfig()
    return WebConfig(
        listen_address=reader.get(
            section, "web", "listen_address", _to_listen_address, default.listen_address
        ),
        read_header_timeout=reader.duration(
            section, "web", "read_header_timeout", default.read_header_timeout
        ),
        max_connections=reader.integer(
            section, "web", "max_connections", default.max_connections, low=1, high=MAX_CONNECTIONS
        ),
        docs_url=reader.get(section, "web", "docs_url", _to_docs_url, default.docs_url),
        telemetry_path=reader.get(
            section, "web", "telemetry_path", to_telemetry_path, default.telemetry_path
        ),
    )


def _thresholds(
    reader: _Reader, value: object, path: str, base: AlertThresholds
) -> AlertThresholds:
    """`base` with the thresholds given in `value` (a mapping of threshold names) laid over."""
    section = reader.section(value, path, THRESHOLD_KEYS)
    return AlertThresholds(
        **{
            key: reader.get(section, path, key, _to_threshold(key), getattr(base, key))
            for key in THRESHOLD_KEYS
        }
    )


def _alerts(reader: _Reader, value: object) -> AlertsConfig:
    section = reader.section(value, "alerts", ALERTS_KEYS)
    return AlertsConfig(
        thresholds=_thresholds(
            reader, section.get("thresholds"), "alerts.thresholds", AlertThresholds()
        )
    )


def _state(reader: _Reader, value: object) -> StateConfig:
    section = reader.section(value, "state", STATE_KEYS)
    return StateConfig(path=reader.get(section, "state", "path", _to_path, StateConfig().path))


def _audit(reader: _Reader, value: object) -> AuditConfig:
    section = reader.section(value, "audit", AUDIT_KEYS)
    # 0 is allowed: it turns the audit off.
    interval = reader.get(section, "audit", "interval", parse_duration, AuditConfig().interval)
    return AuditConfig(interval=interval)


def _polling(reader: _Reader, value: object) -> PollingConfig:
    path = "polling"
    section = reader.section(value, path, POLLING_KEYS)
    default = PollingConfig()
    interval = reader.duration(section, path, "interval", default.interval)
    lookback = reader.duration(section, path, "lookback", default.lookback)
    window = reader.duration(section, path, "window", default.window)
    reconcile = reader.duration(section, path, "reconcile_interval", default.reconcile_interval)
    tasks = reader.duration(section, path, "tasks_interval", default.tasks_interval)
    catch_up = reader.duration(section, path, "catch_up_limit", window)

    def check(key: str, other: str, good: bool, message: str) -> None:
        if not good and reader.ok(f"{path}.{key}", f"{path}.{other}"):
            reader.problem(f"{path}.{key}", message)

    d = format_duration
    check(
        "lookback",
        "interval",
        lookback >= interval,
        f"{d(lookback)} is shorter than polling.interval {d(interval)} (expected lookback >= "
        "interval, or rows written between two polls could be missed)",
    )
    check(
        "lookback",
        "window",
        lookback <= window,
        f"{d(lookback)} is longer than polling.window {d(window)} (expected lookback <= window)",
    )
    check(
        "catch_up_limit",
        "window",
        catch_up <= window,
        f"{d(catch_up)} is longer than polling.window {d(window)} "
        "(expected catch_up_limit <= window; it defaults to the window)",
    )
    check(
        "catch_up_limit",
        "lookback",
        catch_up >= lookback,
        f"{d(catch_up)} is shorter than polling.lookback {d(lookback)} (expected catch_up_limit "
        ">= lookback, or every poll would read less than the lookback)",
    )
    check(
        "reconcile_interval",
        "interval",
        reconcile >= interval,
        f"{d(reconcile)} is shorter than polling.interval {d(interval)} "
        "(expected reconcile_interval >= interval)",
    )
    return PollingConfig(
        interval=interval,
        lookback=lookback,
        window=window,
        reconcile_interval=reconcile,
        tasks_interval=tasks,
        catch_up_limit=catch_up,
        **{
            key: reader.duration(section, path, key, getattr(default, key))
            for key in (
                "summary_interval",
                "user_interval",
                "credits_interval",
                "unavailable_retry_interval",
            )
        },
    )


def _http(reader: _Reader, value: object) -> HttpConfig:
    path = "http"
    section = reader.section(value, path, HTTP_KEYS)
    d = HttpConfig()
    backoff_base = reader.duration(section, path, "backoff_base", d.backoff_base)
    backoff_max = reader.duration(section, path, "backoff_max", d.backoff_max)
    if backoff_max < backoff_base and reader.ok("http.backoff_base", "http.backoff_max"):
        reader.problem(
            "http.backoff_max",
            f"{format_duration(backoff_max)} is shorter than http.backoff_base "
            f"{format_duration(backoff_base)} (expected backoff_max >= backoff_base)",
        )
    return HttpConfig(
        connect_timeout=reader.duration(section, path, "connect_timeout", d.connect_timeout),
        read_timeout=reader.duration(section, path, "read_timeout", d.read_timeout),
        max_retries=reader.integer(
            section, path, "max_retries", d.max_retries, low=0, high=MAX_RETRIES
        ),
        retry_budget=reader.integer(section, path, "retry_budget", d.retry_budget, low=0),
        backoff_base=backoff_base,
        backoff_max=backoff_max,
        concurrency=reader.integer(
            section, path, "concurrency", d.concurrency, low=1, high=MAX_CONCURRENCY
        ),
        page_size=reader.integer(
            section,
            path,
            "page_size",
            d.page_size,
            low=1,
            high=MAX_PAGE_SIZE,
            why=", the API's page limit",
        ),
        max_pages=reader.integer(section, path, "max_pages", d.max_pages, low=1),
    )


def _metrics(reader: _Reader, value: object) -> MetricsConfig:
    section = reader.section(value, "metrics", METRICS_KEYS)
    path = "metrics.label_limits"
    limits = reader.section(section.get("label_limits"), path, LABEL_LIMIT_KEYS)
    default_limits = LabelLimits()
    label_limits = LabelLimits(
        **{
            key: reader.integer(
                limits, path, key, getattr(default_limits, key), low=1, high=MAX_LABEL_LIMIT
            )
            for key in LABEL_LIMIT_KEYS
        }
    )
    path = "metrics.buckets"
    buckets = reader.section(section.get("buckets"), path, BUCKET_KEYS)
    default_buckets = Buckets()
    members_path = "metrics.members"
    members = reader.section(section.get("members"), members_path, MEMBERS_KEYS)
    default_members = MembersConfig()
    return MetricsConfig(
        label_limits=label_limits,
        buckets=Buckets(
            **{
                key: reader.buckets(buckets, path, key, getattr(default_buckets, key))
                for key in BUCKET_KEYS
            }
        ),
        members=MembersConfig(
            enabled=reader.get(members, members_path, "enabled", _to_bool, default_members.enabled),
            limit=reader.integer(
                members, members_path, "limit", default_members.limit, low=1, high=MAX_MEMBERS
            ),
        ),
        top_tasks=reader.integer(
            section, "metrics", "top_tasks", MetricsConfig().top_tasks, low=0, high=MAX_TOP_TASKS
        ),
        task_titles=reader.get(
            section, "metrics", "task_titles", _to_bool, MetricsConfig().task_titles
        ),
        created_series=reader.get(
            section, "metrics", "created_series", _to_bool, MetricsConfig().created_series
        ),
    )


def _token(reader: _Reader, section: Mapping[str, object], path: str) -> Secret:
    """Exactly one of token and token_file; Secret("") after a problem."""
    has_token, has_file = "token" in section, "token_file" in section
    if has_token and has_file:
        reader.problem(f"{path}.token", "both token and token_file are set (expected exactly one)")
    elif has_token:
        return Secret(_inline_token(reader, section["token"], f"{path}.token"))
    elif has_file:
        return Secret(_file_token(reader, section, path))
    else:
        reader.problem(
            f"{path}.token", "missing (expected token: ${NEO_API_TOKEN}, or token_file: a path)"
        )
    return Secret("")


def _inline_token(reader: _Reader, value: object, path: str) -> str:
    ok, raw = reader.expand(value, path)
    if not ok:
        return ""
    if not isinstance(raw, str):
        reader.problem(path, f"expected a string, got {_type_name(raw)}")
        return ""
    return _check_token(reader, raw, path, "is empty")


def _file_token(reader: _Reader, section: Mapping[str, object], path: str) -> str:
    """The token in token_file (relative to the config's directory); warns if others can read it."""
    file_path = f"{path}.token_file"
    filename = reader.get(section, path, "token_file", _to_path, "")
    if not reader.ok(file_path):
        return ""
    full = os.path.join(reader.base_dir, os.path.expanduser(filename))
    try:
        with open(full, encoding="utf-8") as handle:
            text = handle.read()
        mode = os.stat(full).st_mode
    except OSError as exc:
        reader.problem(file_path, f"cannot read {full}: {exc.strerror or type(exc).__name__}")
        return ""
    except UnicodeDecodeError:
        reader.problem(file_path, f"{full} is not UTF-8 text (expected the token alone)")
        return ""
    token = _check_token(reader, text, file_path, f"{full} is empty")
    if reader.ok(file_path) and mode & 0o044:
        reader.warnings.append(
            f"{file_path}: {full} is readable by group or others (mode {mode & 0o777:04o}; "
            "expected chmod 600)"
        )
    return token


def _check_token(reader: _Reader, raw: str, path: str, empty: str) -> str:
    """The stripped token; problems never show it."""
    token = raw.strip()
    if token:
        reader.tokens.extend({raw, token})
    if not token:
        reader.problem(path, f"{empty} (expected the API token)")
    elif any(c.isspace() or not c.isprintable() for c in token):
        reader.problem(
            path, "contains whitespace or control characters (expected a single-line token)"
        )
    return token


def _account(
    reader: _Reader,
    value: object,
    path: str,
    seen: dict[str, str],
    thresholds: AlertThresholds,
) -> AccountConfig | None:
    if not isinstance(value, Mapping):
        reader.problem(path, f"expected a mapping with name and token, got {_describe(value)}")
        return None
    section = reader.section(value, path, ACCOUNT_KEYS)
    name_path = f"{path}.name"
    if "name" not in section:
        reader.problem(
            name_path, "missing (expected a unique name: 1 to 64 letters, digits, '.', '_' or '-')"
        )
    name = reader.get(section, path, "name", _to_name, "")
    if reader.ok(name_path):
        if name in seen:
            reader.problem(
                name_path,
                f"duplicate account name {name!r}, also {seen[name]} (expected unique names)",
            )
        else:
            seen[name] = name_path
    base_url = reader.get(section, path, "base_url", _to_base_url, DEFAULT_BASE_URL)
    _warn_plain_http(reader, base_url, f"{path}.base_url")
    auth_header = reader.get(section, path, "auth_header", _to_auth_header, "bearer")
    token = _token(reader, section, path)
    own = _thresholds(
        reader, section.get("alert_thresholds"), f"{path}.alert_thresholds", thresholds
    )
    return AccountConfig(
        name=name, base_url=base_url, token=token, auth_header=auth_header, alert_thresholds=own
    )


def _warn_plain_http(reader: _Reader, base_url: str, path: str) -> None:
    if not reader.ok(path):
        return
    parts = urlsplit(base_url)
    if parts.scheme == "http" and parts.hostname and not _is_loopback(parts.hostname):
        reader.warnings.append(
            f"{path}: plain http sends the token unencrypted to {parts.hostname} (expected https)"
        )


def _accounts(
    reader: _Reader, value: object, thresholds: AlertThresholds
) -> tuple[AccountConfig, ...]:
    expected = "expected a list of accounts, each with at least name and token"
    if value is None or (isinstance(value, list | tuple) and not value):
        reader.problem("accounts", f"no account configured ({expected})")
        return ()
    if not isinstance(value, list | tuple):
        reader.problem("accounts", f"{expected}, got {_describe(value)}")
        return ()
    seen: dict[str, str] = {}
    accounts = (
        _account(reader, item, f"accounts[{i}]", seen, thresholds) for i, item in enumerate(value)
    )
    return tuple(account for account in accounts if account is not None)


def _teams(reader: _Reader, value: object) -> TeamsConfig:
    expected = "expected a mapping of team names to lists of email addresses or globs"
    if value is None:
        return TeamsConfig()
    if not isinstance(value, Mapping):
        reader.problem("teams", f"{expected}, got {_describe(value)}")
        return TeamsConfig()
    teams: list[TeamConfig] = []
    for key, patterns in value.items():
        path = _join("teams", str(key))
        try:
            name = _to_name(key)
        except ValueError as exc:
            reader.problem(path, str(exc))
            continue
        if name == UNASSIGNED_TEAM:
            reader.problem(path, f"{name!r} is the team of streams no team owns: pick another name")
            continue
        if isinstance(patterns, str) or not isinstance(patterns, list | tuple) or not patterns:
            reader.problem(path, f"expected a non-empty list of addresses or globs, got "
                           f"{_describe(patterns)}")  # fmt: skip
            continue
        kept: list[str] = []
        for i, pattern in enumerate(patterns):
            if not isinstance(pattern, str) or not pattern.strip():
                reader.problem(f"{path}[{i}]", f"expected an address or a glob like "
                               f"'*@example.com', got {_describe(pattern)}")  # fmt: skip
                continue
            kept.append(pattern.strip())
        teams.append(TeamConfig(name, tuple(kept)))
    return TeamsConfig(tuple(teams))


def _budgets(
    reader: _Reader,
    value: object,
    accounts: tuple[AccountConfig, ...],
    teams: TeamsConfig,
) -> tuple[BudgetConfig, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        reader.problem("budgets", f"expected a list of budgets, got {_describe(value)}")
        return ()
    account_names = {account.name for account in accounts}
    budgets: list[BudgetConfig] = []
    names: set[str] = set()
    for i, item in enumerate(value):
        path = f"budgets[{i}]"
        section = reader.section(item, path, BUDGET_KEYS)
        if not isinstance(item, Mapping):
            continue
        problems = len(reader.problems)
        for key in ("name", "account", "period"):
            if key not in section:
                reader.problem(_join(path, key), "missing (every budget needs name, account, "
                               "period and credits or usd)")  # fmt: skip
        name = reader.get(section, path, "name", _to_name, "")
        if name and name in names:
            reader.problem(_join(path, "name"), f"{name!r} is the name of an earlier budget")
        names.add(name)
        account = reader.get(section, path, "account", _to_str, "")
        if account and account not in account_names:
            reader.problem(_join(path, "account"), f"no account is named {account!r} "
                           f"(accounts: {', '.join(sorted(account_names))})")  # fmt: skip
        period = reader.get(section, path, "period", _to_str, "")
        if period and period not in PERIODS:
            reader.problem(_join(path, "period"), f"expected one of {', '.join(PERIODS)}, got "
                           f"{_describe(period)}")  # fmt: skip
        units = [unit for unit in BUDGET_UNITS if unit in section]
        if len(units) != 1:
            reader.problem(path, "give the limit as exactly one of credits: or usd:")
        unit = units[0] if units else "credits"
        limit = reader.get(section, path, unit, _to_number, 0.0)
        if unit in section and limit <= 0:
            reader.problem(_join(path, unit), f"{limit:g} is not a limit (expected a number > 0)")
        team = reader.get(section, path, "team", _to_str, "") or None
        if team is not None and team not in teams.names:
            known = ", ".join(teams.names) or "none configured"
            reader.problem(_join(path, "team"), f"no team is named {team!r} (teams: {known})")
        model = reader.get(section, path, "model", _to_str, "") or None
        if len(reader.problems) == problems:
            budgets.append(BudgetConfig(name, account, period, unit, limit, team, model))
    return tuple(budgets)


# --- entry points ---------------------------------------------------------------------------


def config_from_mapping(data: object, environ: Mapping[str, str], *, base_dir: str = ".") -> Config:
    """A Config from parsed YAML (or any mapping); relative token_file paths use base_dir."""
    reader = _Reader(environ, base_dir)
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(
            f"config: expected a mapping of {', '.join(TOP_KEYS)} at the top, got {_describe(data)}"
        )
    top = reader.section(data, "", TOP_KEYS)
    alerts = _alerts(reader, top.get("alerts"))
    accounts = _accounts(reader, top.get("accounts"), alerts.thresholds)
    teams = _teams(reader, top.get("teams"))
    config = Config(
        web=_web(reader, top.get("web")),
        accounts=accounts,
        polling=_polling(reader, top.get("polling")),
        http=_http(reader, top.get("http")),
        metrics=_metrics(reader, top.get("metrics")),
        state=_state(reader, top.get("state")),
        audit=_audit(reader, top.get("audit")),
        alerts=alerts,
        teams=teams,
        budgets=_budgets(reader, top.get("budgets"), accounts, teams),
    )
    return reader.finish(config)


def _config_from_environ(environ: Mapping[str, str]) -> Config:
    """No file: one account, "default", from NEO_API_TOKEN (+ NEO_API_URL, NEO_API_AUTH_HEADER)."""
    raw_token = environ.get("NEO_API_TOKEN")
    if raw_token is None:
        raise ConfigError(
            "config: no --config.file given and NEO_API_TOKEN is not set (to try the exporter "
            "without a token: neo-exporter --demo)"
        )
    if not raw_token.strip():
        raise ConfigError(
            "config: no --config.file given and NEO_API_TOKEN is empty (expected the API token)"
        )
    reader = _Reader(environ, ".")
    token = _check_token(reader, raw_token, "NEO_API_TOKEN", "is empty")
    # Environment values are used as they are: no ${VAR} substitution in them.
    values = {
        "NEO_API_URL": environ.get("NEO_API_URL") or DEFAULT_BASE_URL,
        "NEO_API_AUTH_HEADER": environ.get("NEO_API_AUTH_HEADER") or "bearer",
    }
    base_url = _convert(reader, values, "NEO_API_URL", _to_base_url, DEFAULT_BASE_URL)
    _warn_plain_http(reader, base_url, "NEO_API_URL")
    auth_header = _convert(reader, values, "NEO_API_AUTH_HEADER", _to_auth_header, "bearer")
    account = AccountConfig("default", base_url, Secret(token), auth_header)
    config = Config(
        web=WebConfig(),
        accounts=(account,),
        polling=PollingConfig(),
        http=HttpConfig(),
        metrics=MetricsConfig(),
        state=StateConfig(),
    )
    return reader.finish(config)


def _convert(
    reader: _Reader,
    values: Mapping[str, str],
    key: str,
    convert: Callable[[object], T],
    default: T,
) -> T:
    try:
        return convert(values[key])
    except ValueError as exc:
        reader.problem(key, str(exc))
        return default


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (the last one would silently win) and leaves
    dates as strings (no key takes a date, and 2024-13-45 would not even load)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        # Per loader, so SafeLoader's class-wide table is left alone.
        self.yaml_implicit_resolvers = {
            first: [(tag, regexp) for tag, regexp in resolvers if not tag.endswith(":timestamp")]
            for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
        }

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key_node.value!r}",
                    key_node.start_mark,
                )
            seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def read_yaml_file(path: str, what: str) -> object:
    """The YAML document in `path`; ConfigError, prefixed with `what`, if it cannot be read."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(
            f"{what}: cannot read {path}: {exc.strerror or type(exc).__name__}"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what}: {path} is not UTF-8 text") from None
    return _parse_yaml(text, path)


def _parse_yaml(text: str, path: str) -> object:
    loader = _StrictLoader(text)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        # Only the description and the position: the snippet of the line could hold a token.
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or "cannot be parsed"
        if exc.context:
            problem = f"{problem} ({exc.context})"
        raise ConfigError(f"config: invalid YAML in {path}{where}: {problem}") from None
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError) as exc:
        raise ConfigError(
            f"config: invalid YAML in {path}: {type(exc).__name__} (a value cannot be read)"
        ) from None
    finally:
        loader.dispose()


def load_config(path: str | None, environ: Mapping[str, str]) -> Config:
    """The config from a YAML file, or with no file from NEO_API_TOKEN alone."""
    if path is None:
        return _config_from_environ(environ)
    data = read_yaml_file(path, "config")
    return config_from_mapping(data, environ, base_dir=os.path.dirname(os.path.abspath(path)))


__all__ = [
    "DEFAULT_BASE_URL",
    "AccountConfig",
    "AlertThresholds",
    "AlertsConfig",
    "Buckets",
    "Config",
    "ConfigError",
    "HttpConfig",
    "LabelLimits",
    "MembersConfig",
    "MetricsConfig",
    "PollingConfig",
    "Secret",
    "StateConfig",
    "WebConfig",
    "config_from_mapping",
    "load_config",
    "parse_duration",
    "parse_listen_address",
    "to_telemetry_path",
]
