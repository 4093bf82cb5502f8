"""The web dashboard of `sched serve`: server-rendered pages (Jinja2, autoescaped) with
htmx served from the package, live over Server-Sent Events. Its pages are not part of
the API's contract (they are left out of /openapi.json)."""
