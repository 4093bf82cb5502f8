"""The agent control file: a JSON array of agents, each with a type and a capacity.

Found at `--agents PATH`, else `$SCHED_AGENT_CONTROL_FILE`, else
`$SCHED_HOME/config/agent-control.json`, else `$SCHED_HOME/agent-control.json`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from eventlog.errors import ControlFileError
from eventlog.values import argv_problem, checked_host_name, text_problem, unique_keys
from scheduler.decisions.fit import capability_list
from scheduler.decisions.hours import HoursError, parse_hours

if TYPE_CHECKING:  # `status` reads the control file without loading the event models
    from eventlog.events import AgentRecord, AgentsConfigured

MAX_CAPACITY = 1_000_000  # slots of one agent
MAX_TIMEOUT_SECONDS = 365 * 86400.0
MAX_WEIGHT = 1_000_000.0
DEFAULT_AGENTS = [
    {"agentName": "dev-1", "agentType": "dev", "maxConcurrency": 2},
    {"agentName": "qa-1", "agentType": "qa", "maxConcurrency": 1},
]


class AgentSpec(BaseModel):
    """One entry of the control file, as users write it."""

    model_config = ConfigDict(frozen=True, extra="allow", strict=True, allow_inf_nan=False)

    name: str = Field(alias="agentName", min_length=1, max_length=256)
    type: str = Field(alias="agentType", min_length=1, max_length=256)
    capacity: int = Field(default=1, alias="maxConcurrency", ge=0, le=MAX_CAPACITY)
    enabled: bool = True
    command: list[str] | None = None
    timeout_seconds: float | None = Field(default=None, alias="timeoutSeconds", gt=0,
                                          le=MAX_TIMEOUT_SECONDS)
    non_retryable_exit_codes: list[Annotated[int, Field(ge=0, le=255)]] = Field(
        default=[], alias="nonRetryableExitCodes")
    # the host whose runner (daemon or tick) starts this agent's command; any host may
    # assign to it (None: the host that assigned starts it)
    host: str | None = Field(default=None, min_length=1, max_length=255)
    # what tasks may require of it (`submit --requires`), checked and sorted
    capabilities: tuple[str, ...] = ()
    # among agents with equally many free slots, the one with the higher weight is preferred
    weight: float = Field(default=1.0, ge=0, le=MAX_WEIGHT)
    # availability windows (scheduler.decisions.hours): outside all of them it takes no new work
    hours: tuple[str, ...] = ()

    @field_validator("name", "type", "host", mode="before")
    @classmethod
    def _storable_name(cls, value: object) -> object:
        if isinstance(value, str) and (problem := text_problem(value)) is not None:
            raise ValueError(problem)
        return value

    @field_validator("name", "type")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():  # (an agent named " ", a queue named "\t": no one means them)
            raise ValueError("must not be blank")
        return value

    @field_validator("host")
    @classmethod
    def _a_host_name(cls, value: str | None) -> str | None:
        return checked_host_name(value)

    @field_validator("capabilities", mode="before")
    @classmethod
    def _capability_names(cls, value: object) -> object:
        if not isinstance(value, list):
            raise ValueError("capabilities must be a list of strings, e.g. [\"browser\", \"gpu\"]")
        return capability_list(value)

    @field_validator("hours", mode="before")
    @classmethod
    def _windows(cls, value: object) -> object:
        windows = [value] if isinstance(value, str) else value
        if not isinstance(windows, list) or not all(isinstance(w, str) for w in windows):
            raise ValueError("hours must be a string such as \"Mon-Fri 08:00-18:00 Europe/Berlin\" "
                             "or a list of such strings")
        try:
            parse_hours(windows)
        except HoursError as e:
            raise ValueError(str(e)) from None
        return tuple(" ".join(w.split()) for w in windows)

    @field_validator("command")
    @classmethod
    def _argv_not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (problem := argv_problem(value, "command")) is not None:
            raise ValueError(problem)
        return value

    def record(self) -> AgentRecord:
        from eventlog.events import AgentRecord

        return AgentRecord(name=self.name, type=self.type, capacity=self.capacity,
                           enabled=self.enabled,
                           command=tuple(self.command) if self.command is not None else None,
                           timeout_seconds=self.timeout_seconds,
                           non_retryable_exit_codes=tuple(self.non_retryable_exit_codes),
                           host=self.host, capabilities=self.capabilities, weight=self.weight,
                           hours=self.hours)

    def record_json(self) -> dict[str, object]:
        """`record().model_dump(mode="json")`, without building the event model (which
        `status` would load just to hash the control file): the same keys and values."""
        return {"name": self.name, "type": self.type, "capacity": self.capacity, "enabled": self.enabled,
                "command": list(self.command) if self.command is not None else None,
                "timeout_seconds": self.timeout_seconds,
                "non_retryable_exit_codes": list(self.non_retryable_exit_codes), "host": self.host,
                "capabilities": list(self.capabilities), "weight": self.weight, "hours": list(self.hours)}


@dataclass(frozen=True)
class ControlFile:
    """A parsed, valid control file."""

    path: Path
    agents: tuple[AgentSpec, ...]
    warnings: tuple[str, ...] = ()
    content_hash: str = field(default="")

    def configured_event(self) -> AgentsConfigured:
        from eventlog.events import AgentsConfigured

        return AgentsConfigured(agents=tuple(a.record() for a in self.agents),
                                content_hash=self.content_hash, source=str(self.path))


def candidate_paths(home: Path, explicit: Path | None) -> list[Path]:
    """Where the control file is looked for, in order (`explicit` is the `--agents`
    flag or `$SCHED_AGENT_CONTROL_FILE`, already merged into the settings)."""
    if explicit is not None:
        return [explicit]
    return [home / "config" / "agent-control.json", home / "agent-control.json"]


def find_control_file(candidates: Sequence[Path]) -> Path:
    for path in candidates:
        if path.is_file():
            return path
    in_the_way = next((path for path in candidates if path.exists()), None)
    if in_the_way is not None:  # (`--fix` would write nothing there: a directory is in the way)
        raise ControlFileError(f"{in_the_way}: not a file; the agent control file is a JSON file "
                               "(give the file's own path)")
    looked = ", ".join(str(p) for p in candidates)
    raise ControlFileError(
        f"no agent control file found (looked at {looked}); "
        "`sched agents validate --fix` writes a default one")


# what tells one version of a file from another: device, inode, size, and the times of
# the last change of its content and of its inode (a write sets both to the kernel's clock)
FileKey = tuple[int, int, int, int, int]
SETTLED_NS = 2_000_000_000  # a file changed longer ago than this is settled (see `settled`)


def settled(key: FileKey, looked_ns: int) -> bool:
    """Whether a file of this key, looked at at `looked_ns` (the wall clock, in ns, read
    before the look), had changed long enough before for any later write to give it
    other times. A write in the same tick of the file system's clock as the look can
    leave the times as they were: such a file is read again each time, until it
    settles."""
    return looked_ns - max(key[3], key[4]) > SETTLED_NS


def read_registry(candidates: Sequence[Path], known: AgentRegistry | None = None,
                  clock_ns: Callable[[], int] = time.time_ns) -> AgentRegistry:
    """The agents of the first control file among `candidates`: `known` itself when it
    was read from that file and the file has not changed since (its `file_key`, taken
    before the read, is the same and was settled then); else the file read anew. A
    claim or a submit asks for the fleet every time; the file rarely changes.
    `clock_ns`: the wall clock the file system stamps files with (tests pass their own)."""
    looked_ns = clock_ns()
    path = find_control_file(candidates)
    key = file_key(path)
    if key is not None and known is not None and known.key == key and known.path == path:
        return known
    registry = AgentRegistry(path)
    registry.key = key if key is not None and settled(key, looked_ns) else None
    return registry


def file_key(path: Path) -> FileKey | None:
    """The key of the file at `path`, from a descriptor opened on it (an open, unlike a
    stat, makes NFS look at the file anew: a change made on another host is seen at the
    next call); None if it cannot be opened (the read that follows says why)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # (a FIFO put there: no wait)
    except OSError:
        return None
    try:
        found = os.fstat(fd)
    finally:
        os.close(fd)
    return found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number JSON allows")


@functools.lru_cache(maxsize=8)
def parse_control_file(path: Path, text: str) -> ControlFile:
    """Validate the text of a control file; raise `ControlFileError` naming the problem.
    The same text is parsed once per process (the result is frozen): a submit or a
    tick reads the file every time and validates it only when it changed."""
    try:
        # numbers that overflow (1e400) stay infinity here, so that the field holding one
        # is named by the validation below; the NaN and Infinity literals are refused
        raw = json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=unique_keys)
    except RecursionError:
        raise ControlFileError(f"{path}: not valid JSON: nested too deeply") from None
    except ValueError as e:
        raise ControlFileError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(raw, list):
        raise ControlFileError(f"{path}: expected a JSON array of agents")
    agents, warnings, seen = [], [], set()
    for index, entry in enumerate(raw):
        where = f"{path}: agent #{index + 1}"
        if not isinstance(entry, dict):
            raise ControlFileError(f"{where}: expected an object")
        try:
            spec = AgentSpec.model_validate(entry)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "entry"
            raise ControlFileError(f"{where}: {loc}: {err['msg'].removeprefix('Value error, ')}") from e
        if spec.name in seen:
            raise ControlFileError(f"{path}: duplicate agentName {spec.name!r}")
        seen.add(spec.name)
        for extra in sorted(spec.model_extra or {}):
            warnings.append(f"{where} ({spec.name}): unknown field {extra!r} ignored")
        agents.append(spec)
    normalized = json.dumps([a.record_json() for a in agents],
                            sort_keys=True, separators=(",", ":"))
    return ControlFile(path, tuple(agents), tuple(warnings),
                       hashlib.sha256(normalized.encode()).hexdigest())


def load_control_file(path: Path) -> ControlFile:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ControlFileError(f"{path}: no such agent control file") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ControlFileError(f"{path}: cannot read: {e}") from e
    return parse_control_file(path, text)


def write_default_control_file(path: Path) -> Path:
    """Write the default control file at `path`; never overwrites an existing file (nor
    writes where a directory is: `ControlFileError`, the file is still missing)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as f:
            json.dump(DEFAULT_AGENTS, f, indent=2)
            f.write("\n")
    except (FileExistsError, NotADirectoryError) as e:  # a directory (or a file above it) is in the way
        if path.is_file():
            raise  # (a file: never overwritten)
        why = "it is a directory" if path.is_dir() else f"{e.filename}: {e.strerror}"
        raise ControlFileError(f"no agent control file at {path}, and a default one cannot be "
                               f"written there: {why}") from e
    return path


class AgentRegistry:
    """The agents of the control file, by name and by type."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reload()

    def reload(self) -> None:
        """Read the file again (raises `ControlFileError` if it became invalid)."""
        self.key: FileKey | None = None  # the file's key when read, if settled then (`read_registry`)
        self.control = load_control_file(self.path)
        self._by_name = {a.name: a for a in self.control.agents}

    @property
    def agents(self) -> tuple[AgentSpec, ...]:
        return self.control.agents

    def get(self, agent_name: str) -> AgentSpec | None:
        return self._by_name.get(agent_name)

    def get_all_types(self) -> list[str]:
        return sorted({a.type for a in self.control.agents})
