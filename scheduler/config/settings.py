"""The settings of sched: defaults, then `$SCHED_HOME/sched.toml`, then `SCHED_*`
environment variables, then command-line flags. `sched config show` prints each
value with the place it came from."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from eventlog.errors import BadInput
from eventlog.storage import is_url, redact, unusable_url
from eventlog.values import argv_problem, checked_host_name, text_problem
from scheduler.config.envsubst import expand
from scheduler.config.webhook_config import WebhookConfig
from scheduler.decisions.policy import MAX_SECONDS, QueuePolicy

ENV_PREFIX = "SCHED_"
MAX_COUNT = 2**63 - 1
MAX_HOST_CHARS = 255  # a host name: the `host` setting, host tokens, the host API


class Settings(BaseModel):
    """Every tunable of sched, validated. Values come from `load_settings`, which
    merges the sources itself so that it can tell where each value came from: the
    model only validates (a plain pydantic model, configured as pydantic-settings'
    BaseSettings would be, whose import alone cost a quick command 70 ms or more)."""

    # NaN and infinity are refused everywhere; every duration is at most MAX_SECONDS
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True,
                              arbitrary_types_allowed=True)

    home: Path = Field(default=Path("."), description="working directory of sched")
    db: str | None = Field(default=None, description="database file (default HOME/sched.db), or a "
                           "postgresql:// URL")
    host: str | None = Field(default=None, min_length=1, max_length=MAX_HOST_CHARS,
                             description="this process's host name (default: the machine's name)")
    database_url: str | None = Field(default=None, description="PostgreSQL URL (postgresql://...); "
                                     "when set, it is the database, whatever db says in the same "
                                     "place (a db flag or variable above it wins)")
    database_listen_url: str | None = Field(
        default=None, description="PostgreSQL: where wake-ups are listened for (LISTEN needs a session: "
        "the server itself behind a pooler in transaction mode); default the database's URL")
    agent_control_file: Path | None = Field(
        default=None, description="agent control file (default: searched under HOME)")
    lease_seconds: float = Field(le=MAX_SECONDS, default=300.0, gt=0,
                                 description="lease length of a running attempt")
    start_deadline_seconds: float = Field(
        le=MAX_SECONDS, default=120.0, gt=0,
        description="time an assignment has to start before it is taken back")
    max_attempts: int = Field(default=3, ge=1, le=1_000_000,
                              description="attempts of a task unless submitted otherwise")
    tick_interval_seconds: float = Field(le=MAX_SECONDS, default=10.0, gt=0,
                                         description="daemon tick interval")
    synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = Field(
        default="NORMAL", description="SQLite durability: FULL survives power loss")
    busy_timeout_ms: int = Field(default=30_000, ge=0, le=2**31 - 1,
                                 description="how long a writer waits for the write lock")
    postgres_prepared_statements: bool = Field(
        default=True, description="PostgreSQL: statements run often are prepared on the server; "
        "false behind a pooler in transaction mode that cannot keep them (PgBouncer before 1.21)")
    backoff_base_seconds: float = Field(
        le=MAX_SECONDS, default=30.0, ge=0, description="retry delay cap after the first failed attempt")
    backoff_factor: float = Field(default=2.0, ge=1, le=1000,
        description="growth of the delay cap per attempt")
    backoff_max_seconds: float = Field(le=MAX_SECONDS, default=3600.0, ge=0,
        description="largest retry delay")
    age_boost_seconds: float = Field(
        le=MAX_SECONDS, default=600.0, ge=0,
        description="a queued task gains one priority point per this long waited (0: off)")
    age_boost_max: int = Field(default=10, ge=0, le=100,
        description="most points a task gains by waiting")
    due_boost_seconds: float = Field(
        le=MAX_SECONDS, default=3600.0, ge=0,
        description="a task with a due time gains priority over this long before it (0: off)")
    due_boost_max: int = Field(default=10, ge=0, le=100,
        description="points a task has gained at its due time (and keeps while overdue)")
    max_queue_depth: int = Field(
        default=10_000, ge=1, le=MAX_COUNT,
        description="open tasks a queue may hold; a submit beyond is refused")
    max_payload_bytes: int = Field(
        default=1024 * 1024, ge=1, le=1024**3,
        description="largest payload or result (its JSON, in bytes); larger ones are refused")
    max_title_bytes: int = Field(
        default=1024, ge=1, le=1024**2,
        description="longest title, queue, agent or type name, idempotency key, by or reason (bytes)")
    max_message_bytes: int = Field(
        default=4096, ge=1, le=1024**2,
        description="longest error or progress message (bytes); an agent's own output is cut to it")
    progress_min_interval_seconds: float = Field(
        le=MAX_SECONDS, default=5.0, ge=0,
        description="progress reports of one task closer together than this are not recorded")
    agent_log_max_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, le=2**40,
        description="agent.log of an attempt is rotated to agent.log.1 when it reaches this size")
    health_interval_seconds: float = Field(
        le=MAX_SECONDS, default=60.0, gt=0, description="how often the daemon runs the health checks, when a "
        "webhook subscribes to health.changed")
    health_window_seconds: float = Field(
        le=MAX_SECONDS, default=3600.0, gt=0,
        description="window of the error-rate and lease-expiry health checks")
    health_tick_degraded_intervals: float = Field(
        default=3.0, gt=0, description="health: degraded when the last tick is older than this "
        "many tick intervals")
    health_tick_unhealthy_intervals: float = Field(
        default=10.0, gt=0, description="health: unhealthy when the last tick is older than this "
        "many tick intervals")
    health_backlog_degraded: int = Field(
        default=1000, ge=1, le=MAX_COUNT,
        description="health: degraded when a queue holds this many queued tasks")
    health_backlog_unhealthy: int = Field(
        default=5000, ge=1, le=MAX_COUNT,
        description="health: unhealthy when a queue holds this many queued tasks")
    health_error_rate_degraded: float = Field(
        default=0.25, ge=0, le=1, description="health: degraded at this share of failed attempts")
    health_error_rate_unhealthy: float = Field(
        default=0.5, ge=0, le=1, description="health: unhealthy at this share of failed attempts")
    health_error_rate_min_attempts: int = Field(
        default=5, ge=1, le=MAX_COUNT,
        description="health: attempts the window needs before its error rate counts")
    health_stall_degraded_seconds: float = Field(
        le=MAX_SECONDS, default=1800.0, gt=0, description="health: degraded when work is queued and nothing "
        "succeeded for this long")
    health_stall_unhealthy_seconds: float = Field(
        le=MAX_SECONDS, default=7200.0, gt=0, description="health: unhealthy when work is queued and nothing "
        "succeeded for this long")
    health_expiries_degraded: int = Field(
        default=3, ge=1, le=MAX_COUNT,
        description="health: degraded at this many lease expiries in the window")
    health_expiries_unhealthy: int = Field(
        default=10, ge=1, le=MAX_COUNT,
        description="health: unhealthy at this many lease expiries in the window")
    health_unstarted_degraded: int = Field(
        default=3, ge=1, le=MAX_COUNT,
        description="health: degraded when an agent in service had this many assignments go back "
        "not started, or commands that could not start, in the window, and started none")
    queues: dict[str, dict[str, object]] = Field(
        default={}, description="per-queue overrides: [queues.NAME] tables in sched.toml")
    exec_timeout_seconds: float = Field(
        le=MAX_SECONDS, default=3600.0, gt=0, description="run time of an agent command before it is stopped "
        "(per agent: timeoutSeconds in the control file)")
    kill_grace_seconds: float = Field(
        le=MAX_SECONDS, default=10.0, ge=0,
        description="time between SIGTERM and SIGKILL when stopping an agent")
    exec_cgroups: bool = Field(
        default=True,
        description="run each push-agent attempt in its own cgroup v2 group where the host allows it "
        "(false: find its processes by their environment marks and the wrapper's subreaper only)")
    exec_sample_seconds: float = Field(
        le=MAX_SECONDS, default=1.0, gt=0,
        description="how often the exec wrapper samples its agent's memory")
    exec_env_allowlist: list[str] = Field(
        default=["PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME",
                 "TERM"],
        description="variables of the scheduler's environment an agent command inherits "
        "(comma-separated in SCHED_EXEC_ENV_ALLOWLIST)")
    webhooks: list[WebhookConfig] = Field(
        default=[], description="URLs that receive events: [[webhooks]] tables in sched.toml")
    webhook_timeout_seconds: float = Field(
        le=MAX_SECONDS, default=5.0, gt=0,
        description="how long a webhook POST may wait to connect or for an answer")
    webhook_max_attempts: int = Field(default=10, ge=1, le=MAX_COUNT,
                                      description="POSTs of one delivery before it is given up")
    webhook_backoff_base_seconds: float = Field(
        le=MAX_SECONDS, default=10.0, ge=0, description="delay cap before the second POST of a delivery")
    webhook_backoff_max_seconds: float = Field(le=MAX_SECONDS, default=3600.0, ge=0,
                                               description="largest delay between POSTs of a delivery")
    webhook_interval_seconds: float = Field(le=MAX_SECONDS, default=5.0, gt=0,
                                            description="how often the daemon delivers webhooks")
    webhook_retention_days: float = Field(
        default=7.0, gt=0, le=MAX_SECONDS / 86400,
        description="how long delivered and given-up webhook rows stay in the outbox")

    @field_validator("exec_env_allowlist", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    # (id of the Settings that filled it, queue -> its policy): built once per Settings,
    # which are frozen; a model_copy (which may change a policy field) starts afresh
    _policies: tuple[int, dict[str, QueuePolicy]] = PrivateAttr(default=(0, {}))

    def queue_policy(self, queue: str) -> QueuePolicy:
        """The policy of `queue`: its `[queues.NAME]` keys over the top-level settings
        (built on first use, then kept: a pass asks for it once per task it touches)."""
        owner, cache = self._policies
        if owner != id(self):
            cache = {}
            self._policies = (id(self), cache)
        policy = cache.get(queue)
        if policy is None:
            defaults = {name: getattr(self, name) for name in QueuePolicy.model_fields
                        if name in type(self).model_fields}
            policy = cache[queue] = QueuePolicy(**{**defaults, **self.queues.get(queue, {})})
        return policy

    @model_validator(mode="after")
    def _queue_tables_are_valid(self) -> Settings:
        for queue in self.queues:
            try:
                gate = self.queue_policy(queue).gate
            except ValidationError as e:
                err = e.errors()[0]
                said = err["msg"].removeprefix("Value error, ")
                raise ValueError(f"[queues.{queue}] {'.'.join(map(str, err['loc']))}: {said}") from e
            # as an agent's command: `[""]` closed the gate for good, a NUL failed every tick
            if gate is not None and (problem := argv_problem(gate, "gate")) is not None:
                raise ValueError(f"[queues.{queue}] gate: {problem}")
        return self

    @model_validator(mode="after")
    def _health_thresholds_are_ordered(self) -> Settings:
        for check in ("tick_{}_intervals", "backlog_{}", "error_rate_{}", "stall_{}_seconds",
                      "expiries_{}"):
            degraded = getattr(self, "health_" + check.format("degraded"))
            unhealthy = getattr(self, "health_" + check.format("unhealthy"))
            if unhealthy < degraded:
                raise ValueError(f"health_{check.format('unhealthy')} ({unhealthy}) is below "
                                 f"health_{check.format('degraded')} ({degraded})")
        return self

    def queue_table_warnings(self, served: Iterable[str]) -> list[str]:
        """A `[queues.NAME]` table for a queue no agent serves is most likely a typo (it
        then silently configures nothing): one warning for each."""
        known = set(served)
        return [f"sched.toml: [queues.{name}] names a queue no agent of the control file serves "
                f"(known queues: {', '.join(sorted(known)) or 'none'})"
                for name in sorted(self.queues) if name not in known]

    @field_validator("db", mode="before")
    @classmethod
    def _a_path_or_a_postgres_url(cls, value: object) -> object:
        value = os.fspath(value) if isinstance(value, os.PathLike) else value
        if isinstance(value, str) and (problem := unusable_url(value)) is not None:
            raise ValueError(problem)
        return value

    @field_validator("home", "db")
    @classmethod
    def _a_path_sched_can_print(cls, value: Path | str | None) -> Path | str | None:
        """A home or database file whose resolved path is text: a directory named with a
        byte that is not UTF-8 (reached through SCHED_HOME or the current directory; a
        flag is refused before) could be created but never opened, named in a message,
        or given to an agent in SCHED_DB."""
        if value is None or (isinstance(value, str) and is_url(value)):
            return value
        try:
            resolved = str(Path(value).resolve())
        except OSError:  # (the current directory is gone: the command says so where it looks)
            return value
        if (problem := text_problem(resolved)) is not None:
            raise ValueError(f"the path {resolved!r} {problem}")
        return value

    @field_validator("host")
    @classmethod
    def _a_host_name(cls, value: str | None) -> str | None:
        return checked_host_name(value)

    @field_validator("database_url", "database_listen_url")
    @classmethod
    def _is_postgres_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not is_url(value):
            hint = " (a file goes in db)" if info.field_name == "database_url" else ""
            raise ValueError(f"must be a postgresql:// URL{hint}")
        return value

    @property
    def database(self) -> str | Path:
        """Where the database is: a PostgreSQL URL, or the SQLite file."""
        if self.database_url:
            return self.database_url
        if self.db is not None and is_url(self.db):
            return self.db
        return self.db_path

    @property
    def host_name(self) -> str:
        """The host this process acts for: pinned agents, its own wrappers, its daemon."""
        if self.host:
            return self.host
        import socket

        return socket.gethostname()

    @property
    def database_label(self) -> str:
        """The database as messages name it and agents see it in SCHED_DB: the resolved
        file, or the URL without its password."""
        location = self.database
        return redact(location) if is_url(location) else str(Path(location).resolve())

    @property
    def db_path(self) -> Path:
        """The SQLite file (what `db` names; HOME/sched.db by default)."""
        return Path(self.db) if self.db is not None else self.home / "sched.db"


# settings `config show` prints with each value filled in from the environment masked
MASKED_SETTINGS = ("webhooks",)


@dataclass(frozen=True)
class LoadedSettings:
    settings: Settings
    sources: dict[str, str]  # field -> "default" | "sched.toml" | "environment" | "flag"
    # field -> the environment variables filled into its sched.toml value (`${VAR}`)
    variables: dict[str, list[str]] = field(default_factory=dict)
    # field -> its sched.toml value with what came from the environment shown as `***`
    # (for the settings of MASKED_SETTINGS that took a variable)
    masked: dict[str, object] = field(default_factory=dict)


def _note_written_urls(loaded: LoadedSettings) -> None:
    """Give each webhook that took a `${VAR}` its URL as written, masked, to print."""
    written = loaded.masked.get("webhooks")
    if isinstance(written, list):
        for hook, table in zip(loaded.settings.webhooks, written, strict=False):
            if isinstance(table, dict) and isinstance(table.get("url"), str):
                hook._written = table["url"]


def load_settings(environ: Mapping[str, str] | None = None,
                  flags: Mapping[str, object] | None = None) -> LoadedSettings:
    """Merge defaults < sched.toml < SCHED_* variables < flags and validate them."""
    environ = os.environ if environ is None else environ
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    values: dict[str, object] = {}
    sources = {name: "default" for name in Settings.model_fields}
    home = Path(str(flags.get("home") or environ.get(ENV_PREFIX + "HOME") or "."))
    toml_path = home / "sched.toml"
    from_toml, variables, masked, unfilled = _read_toml(toml_path, environ)
    for source, layer in (("sched.toml", from_toml),
                          ("environment", _from_environ(environ)),
                          ("flag", flags)):
        for name, value in layer.items():
            values[name] = value
            sources[name] = source
    values.setdefault("home", home)
    _db_given_above_database_url(values, sources)
    for name, problem in unfilled.items():  # (a setting the environment or a flag overrides
        if sources[name] == "sched.toml":   # needs no variable of its sched.toml value)
            raise problem
    used = {name: names for name, names in variables.items() if sources[name] == "sched.toml"}
    try:
        loaded = LoadedSettings(Settings(**values), sources, used,
                                {name: value for name, value in masked.items() if name in used})
        _note_written_urls(loaded)
        return loaded
    except ValidationError as e:
        err = e.errors()[0]
        said = err["msg"].removeprefix("Value error, ")

        def place(name: str, detail: str) -> str:
            return {"environment": f"{ENV_PREFIX}{name.upper()}", "sched.toml": f"{toml_path}: {detail}",
                    "flag": f"--{name.replace('_', '-')}"}.get(sources.get(name, ""), detail)

        if err["loc"]:  # one setting
            where = place(str(err["loc"][0]), _describe_loc(err["loc"]))
        else:  # a check across settings (the [queues.NAME] tables, thresholds in order): where
            # each setting it names that is not a default came from
            import re

            named = [name for name in Settings.model_fields if sources[name] != "default"
                     and re.search(rf"\b{name}\b", said)]
            places = (str(toml_path) if sources[name] == "sched.toml" else place(name, name)
                      for name in named)
            where = ", ".join(dict.fromkeys(places)) or str(toml_path)
        raise BadInput(f"setting {where}: {said}") from e


_LAYERS = ("default", "sched.toml", "environment", "flag")  # each overrides those before it


def _db_given_above_database_url(values: dict[str, object], sources: dict[str, str]) -> None:
    """`database_url` wins over `db` given in the same place, but not over a `db` given
    above it: `--db backup.db` (or `SCHED_DB`) names the database to use even where
    sched.toml sets `database_url`, whose database (and `database_listen_url`, which
    listens on it) stands aside. (A `--db` quietly ignored sent `replay --verify` of a
    backup to the live database, which it reported verified.)"""
    rank = _LAYERS.index(sources["db"])
    for name in ("database_url", "database_listen_url"):
        if name in values and _LAYERS.index(sources[name]) < rank:
            del values[name]
            sources[name] = "default"


def _describe_loc(loc: tuple[int | str, ...]) -> str:
    """Where a validation error is: `lease_seconds`, or `webhooks #2 url` for a key of
    the second `[[webhooks]]` table (items counted from 1, as written)."""
    return " ".join(f"#{part + 1}" if isinstance(part, int) else str(part) for part in loc)


# settings that are tables of sched.toml, which no environment variable can give
TABLES = {"queues": "per-queue settings are [queues.NAME] tables",
          "webhooks": "webhooks are [[webhooks]] tables"}


def _from_environ(environ: Mapping[str, str]) -> dict[str, str]:
    result = {}
    for name in Settings.model_fields:
        key = ENV_PREFIX + name.upper()
        if key in environ and environ[key] != "":
            if name in TABLES:
                raise BadInput(f"setting {key}: {TABLES[name]} in sched.toml, which the environment "
                               f"cannot set (unset {key})")
            result[name] = environ[key]
    return result


def _read_toml(path: Path, environ: Mapping[str, str]) -> tuple[
        dict[str, object], dict[str, list[str]], dict[str, object], dict[str, BadInput]]:
    """The settings of `path` with `${VAR}` filled in; for each setting that took a
    variable, their names, and (for MASKED_SETTINGS) its value as `config show` prints it;
    and for each that could not be filled in, why."""
    if not path.is_file():
        if path.exists():  # (a directory, say: not a file with no settings in it)
            raise BadInput(f"{path}: not a file; sched reads its settings from a TOML file of that name")
        return {}, {}, {}, {}
    import tomllib  # (only where a sched.toml exists)

    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise BadInput(f"{path}: {e}") from e
    except RecursionError:  # (hundreds of nested arrays: the parser recurses)
        raise BadInput(f"{path}: nested too deeply to read") from None
    unknown = sorted(set(data) - set(Settings.model_fields))
    if unknown:
        raise BadInput(f"{path}: unknown setting {unknown[0]!r}")
    if "home" in data:
        raise BadInput(f"{path}: 'home' cannot be set in sched.toml (it is found through home); "
                       "use --home or SCHED_HOME")
    _no_booleans_for_numbers(path, data)
    variables: dict[str, list[str]] = {}
    masked: dict[str, object] = {}
    unfilled: dict[str, BadInput] = {}
    for key in list(data):
        try:
            expanded = expand(data[key], environ, f"{path}: {key}")
        except BadInput as e:
            unfilled[key] = e
            continue
        data[key] = expanded.value
        if expanded.variables:
            variables[key] = expanded.variables
            if key in MASKED_SETTINGS:
                masked[key] = expanded.masked
    for key in ("db", "agent_control_file"):  # relative to the home that holds the file
        value = data.get(key)  # (a db of a URL of another kind is left for its check to refuse)
        if isinstance(value, str) and not is_url(value) and (key != "db" or unusable_url(value) is None):
            data[key] = str(path.parent / value)
    return data, variables, masked, unfilled


def _no_booleans_for_numbers(path: Path, data: dict[str, object]) -> None:
    """TOML says what a value is: `max_attempts = true` is a boolean, which the lax
    validation (kept so that the environment's text parses) would read as 1."""
    queues = data.get("queues")
    tables = [("", data, Settings)] + [(f"[queues.{name}] ", table, QueuePolicy)
                                       for name, table in (queues.items() if isinstance(queues, dict) else ())
                                       if isinstance(table, dict)]
    for where, table, model in tables:
        for key, value in table.items():
            if boolean_for_number(model, key, value):
                raise BadInput(f"{path}: {where}{key}: {str(value).lower()} is a boolean, not a number")


def boolean_for_number(model: type[BaseModel], key: str, value: object) -> bool:
    """Whether `value` is a boolean given for `model`'s number setting `key` (which the
    lax validation would read as 0 or 1)."""
    field = model.model_fields.get(key)
    return isinstance(value, bool) and field is not None and field.annotation in (int, float)
