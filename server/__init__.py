"""The HTTP front end of sched (`sched serve`): a FastAPI app that parses a request,
calls the same function the CLI calls, and returns the same JSON document. No
decisions here: they are made below, in `scheduler/`."""
