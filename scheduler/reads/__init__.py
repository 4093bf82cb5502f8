"""The read side: answers from the projections and the operational records, never
by scanning the log (except `explain`, which reads one task's stream). Status and
task lists (`queries`), why a task went where it went (`explain`), the figures of a
window (`metrics`), the live view (`dashboard`), and the health checks (`health`)."""
