"""What sched is told: the settings (`settings`: defaults, `sched.toml`, `SCHED_*`
variables and flags, with `${VAR}` filled from the environment by `envsubst`), one
`[[webhooks]]` table (`webhook_config`), and the agent control file (`registry`)."""
