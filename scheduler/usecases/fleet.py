"""Use cases about the fleet: the agents and their load, pause and resume (assignment
as a whole), drain, evict and restore (one agent)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from eventlog.errors import BadInput
from scheduler.usecases.base import Reason, Request, trial, with_changes
from scheduler.workspace import Workspace

if TYPE_CHECKING:
    from scheduler.dryrun import DryRun
    from scheduler.operator import ServiceChange

# the operator actions import their machinery (the tick, the event models) when called


class AgentList(NamedTuple):
    """The agents of the control file with their load and free slots now, and where
    the control file is."""

    agents: dict[str, dict[str, Any]]
    path: str

    def to_json(self) -> dict[str, Any]:
        return {"agents": self.agents, "path": self.path}


def list_agents(ws: Workspace) -> AgentList:
    """Each agent of the control file: type, capacity, enabled, out of service (drained
    or evicted by an operator, or None), assigned, running, free (capacity less load,
    never below 0; 0 when disabled or out of service), command, capabilities,
    weight, hours and whether those hours hold now."""
    from scheduler.decisions.hours import is_available

    control = ws.registry().control
    with ws.read() as (_log, views):
        loads = {a.name: a for a in views.all_agents()}
    now = ws.clock.now()
    rows = {}
    for spec in control.agents:
        seen = loads.get(spec.name)
        assigned, running = (seen.assigned, seen.running) if seen else (0, 0)
        out_of_service = seen.out_of_service if seen else None
        free = max(spec.capacity - assigned - running, 0) if spec.enabled and not out_of_service else 0
        rows[spec.name] = {"type": spec.type, "capacity": spec.capacity,
                           "enabled": spec.enabled, "out_of_service": out_of_service,
                           "assigned": assigned, "running": running,
                           "free": free, "command": list(spec.command) if spec.command else None,
                           "capabilities": list(spec.capabilities), "weight": spec.weight,
                           "hours": list(spec.hours), "available": is_available(spec.hours, now)}
    return AgentList(rows, str(control.path))


class PauseRequest(Request):
    where = "pause"
    by: str = "operator"
    reason: Reason = None


class Paused(NamedTuple):
    changed: bool  # False: it already was paused, nothing appended

    def to_json(self) -> dict[str, Any]:
        return {"paused": True, "changed": self.changed}


def pause(ws: Workspace, request: PauseRequest) -> Paused:
    """Stop assigning work, fleet-wide (leases still expire; running agents go on)."""
    from scheduler import operator

    return Paused(operator.pause(ws, request.by, request.reason))


class ResumeRequest(Request):
    where = "resume"
    by: str = "operator"


class Resumed(NamedTuple):
    """`changed` False: it was not paused by an event. While this host's stop file
    exists, assignment stays stopped (`paused`)."""

    changed: bool
    stop_file: bool

    def to_json(self) -> dict[str, Any]:
        return {"paused": self.stop_file, "changed": self.changed, "stop_file": self.stop_file}


def resume(ws: Workspace, request: ResumeRequest) -> Resumed:
    """Assign work again after a pause."""
    from scheduler import operator

    changed = operator.resume(ws, request.by)
    return Resumed(changed, ws.stop_file.exists())


class ServiceRequest(Request):
    """One agent to take out of service (or put back), who does it and why."""

    where = "agent"
    agent: str
    by: str = "operator"
    reason: Reason = None
    dry_run: bool = False  # (evict only)


class ServiceResult(NamedTuple):
    """What taking an agent out of service (or back) did: `changed` False when it
    already was so; assignments sent back (`released`), running attempts ended and
    requeued (`taken_back`) and, of those, the ones whose processes were stopped here
    (`stopped`: the others' runners stop them when their next heartbeat is refused)."""

    change: ServiceChange
    dry_run: DryRun | None = None

    def to_json(self) -> dict[str, Any]:
        c = self.change
        return with_changes({"agent": c.agent, "changed": c.changed, "out_of_service": c.out_of_service,
                             "released": c.released, "taken_back": c.taken_back, "stopped": c.stopped},
                            self.dry_run)


def _no_dry_run(request: ServiceRequest, what: str) -> None:
    if request.dry_run:
        raise BadInput(f"{what} has no dry run (evict has)")


def drain(ws: Workspace, request: ServiceRequest) -> ServiceResult:
    """No new work for the agent; its assignments not started go back; running
    attempts finish."""
    from scheduler import operator

    _no_dry_run(request, "drain")
    return ServiceResult(operator.drain(ws, request.agent, request.by, request.reason))


def evict(ws: Workspace, request: ServiceRequest) -> ServiceResult:
    """No new work for the agent; its attempts are stopped and retried elsewhere."""
    from scheduler import operator

    dry_run = trial(request.dry_run)
    return ServiceResult(operator.evict(ws, request.agent, request.by, request.reason, dry_run),
                         dry_run)


def restore(ws: Workspace, request: ServiceRequest) -> ServiceResult:
    """Put a drained or evicted agent back in service."""
    from scheduler import operator

    _no_dry_run(request, "restore")
    return ServiceResult(operator.restore(ws, request.agent, request.by))
