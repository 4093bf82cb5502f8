"""The pure decisions of a scheduler pass: which queued task goes to which agent
(`plan`), what happens after a failure (`policy`), which agents fit a task (`fit`,
`hours`), and when listed tasks may start (`estimates`). Plain values in, plain values
out: no database, no clock, no processes."""
