"""What every use case shares: the request base class (strict pydantic; a validation
error becomes one `BadInput` line), and the results' JSON conventions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from eventlog.errors import BadInput, OffSchema, SchedError, off_schema

if TYPE_CHECKING:
    from scheduler.dryrun import DryRun


def bad_input(error: ValidationError, where: str = "") -> SchedError:
    """The one-line error of a request that failed validation: the `SchedError` a check
    raised (its message as the CLI prints it), else `WHERE: FIELD: what is wrong`."""
    first = error.errors()[0]
    raised = (first.get("ctx") or {}).get("error")
    if isinstance(raised, SchedError):
        return raised
    loc = ".".join(str(p) for p in first["loc"]) or "request"
    prefix = f"{where}: " if where else ""
    kind = OffSchema if off_schema(first["type"]) else BadInput  # (HTTP: 422, else 400)
    return kind(f"{prefix}{loc}: {first['msg'].removeprefix('Value error, ')}")


class Request(BaseModel):
    """A use case's input: strict (no `"5"` for 5, no unknown fields), immutable, and
    built only when first used (a quick command pays for the one it needs). Made with
    keywords, a bad request raises `BadInput` (`bad_input`); validated by an HTTP
    front end, convert its `ValidationError` with `bad_input(error, Model.where)`."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)
    where: ClassVar[str] = ""  # names the request in messages about its fields

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise bad_input(e, self.where) from e


def said(reason: str | None) -> str | None:
    """An operator's reason, kept in the event: given, it says something (a blank one
    is a mistake, as a blank `--error`); left out, the event has none."""
    if reason is not None and not reason.strip():  # (a refused value, not a body off its schema:
        raise BadInput("reason: blank: say why, or leave the reason out")  # HTTP 400, as a blank title)
    return reason


Reason = Annotated[str | None, AfterValidator(said)]


def with_changes(document: dict[str, Any], dry_run: DryRun | None) -> dict[str, Any]:
    """A document; in a dry run with `"dry_run": true` and `changes` (the events the
    real run would append). A real run's document stays as it always was."""
    if dry_run is None:
        return document
    return {**document, "dry_run": True, "changes": dry_run.changes}


def trial(dry_run: bool) -> DryRun | None:
    """The `DryRun` a use case passes down when asked for one."""
    if not dry_run:
        return None
    from scheduler.dryrun import DryRun

    return DryRun()
