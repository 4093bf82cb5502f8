"""The use cases: one function per operation, under both front ends (the CLI and the
HTTP API). Each takes a typed request (a pydantic model, `base.Request`: the HTTP
request body) or, where its input is one or two plain values, keyword arguments; it
returns a typed result (a NamedTuple) whose `to_json()` is the one document both front
ends give (`--json` and the HTTP body); it raises `SchedError`s (`BadInput` with the
one line the CLI prints). The front ends only parse, call and format.

- `tasks`: list, show (reads)
- `actions`: submit, cancel, approve, reject, requeue
- `fleet`: list_agents, pause, resume, drain, evict, restore
- `observe`: status, metrics, health, explain, replay (the trail, verify, head)
- `work`: the worker protocol: claim, heartbeat, progress, complete, fail

Reads and writes sit in different modules, and each operation imports its machinery
when called: a quick command (status, tasks, the worker protocol) builds only its own
request and result classes and loads no more than before (issue 13: a quick CLI).
"""
