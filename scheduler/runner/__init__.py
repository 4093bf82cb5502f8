"""Running push agents' commands: the supervisor that starts and watches them
(`supervisor`, forked by the daemon through `launcher`, or run alone by `exec`), what
contains and stops their processes (`containment`), what a run cost (`usage`), and the
runner protocol over HTTP for hosts with no database access (`remote`, `agent_host`)."""
