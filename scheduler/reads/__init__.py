"""The read side: answers from the projections and the operational records (status
and task lists, `queries`; the figures of a window, `metrics`; the live view,
`dashboard`; the health checks, `health`), and from the log itself where the question
is about the past (`explain` reads one task's stream; `status --at`, `replay` and its
`verify` fold the log). Nothing here writes."""
