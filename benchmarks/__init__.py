"""The benchmark suite (`make bench`, `python -m benchmarks.run`): every figure of sched
is measured beside a ceiling, the same work done with bare `sqlite3` in the same run,
so each result is also a ratio that holds on a noisy machine. See docs/performance.md."""
