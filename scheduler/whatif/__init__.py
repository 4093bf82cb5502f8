"""What-if: replay a workload under another fleet or policy with a virtual clock.

`workload` turns the log (or a JSONL file, or a seeded generator) into a time-ordered
stream of facts; `engine` runs that stream through the scheduler's own `plan()` and
failure policy; `figures` sums a run up and compares two; `capacity` searches the
smallest capacity that meets a target; `simulate` is the use case the CLI calls.
Nothing here writes to the database.
"""
