"""`make demo`: sched end to end on a fresh SQLite database in a temporary workspace.

1. A control file with five push agents in four queues -- real programs from
   examples/agents/ (count words, checksum a file, byte-compile Python, and one that
   fails now and then) -- and one pull worker.
2. The daemon (`sched run`) starts; 32 tasks are submitted in one transaction.
3. The daemon's ticks start each agent through `sched exec`; failures are retried on
   another agent where there is one, and end in the dead-letter queue when their
   attempts are used up (after a short jittered backoff, set in the demo's sched.toml).
   Meanwhile this script acts as the pull worker
   (`sched worker claim/complete`). Progress is shown live.
4. The file behind one dead task is fixed and the task requeued with fresh attempts.
5. SIGTERM stops the daemon; `status`, the dead letters, one failure's history and
   `replay --verify` close the demo. Every step is a real `sched` call.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCHED = [sys.executable, "-m", "cli"]
AGENTS = ROOT / "examples" / "agents"


def agent(name: str, queue: str, capacity: int, program: str | None) -> dict[str, object]:
    spec: dict[str, object] = {"agentName": name, "agentType": queue, "maxConcurrency": capacity}
    if program:
        spec["command"] = [sys.executable, str(AGENTS / program)]
        spec["timeoutSeconds"] = 60
    return spec


FLEET = [
    agent("vaela", "words", 2, "wordcount.py"),
    agent("damien", "words", 1, "wordcount.py"),
    agent("oscar", "checksums", 2, "checksum.py"),
    agent("kalis", "builds", 1, "compile_check.py"),
    agent("mira", "sums", 1, "flaky.py"),
    agent("scribe", "notes", 1, None),  # a pull worker: this script claims its work
]


def sched(env: dict[str, str], *args: str, ok: tuple[int, ...] = (0,)) -> str:
    done = subprocess.run([*SCHED, *args], env=env, capture_output=True, text=True)
    if done.returncode not in ok:
        sys.exit(f"demo: `sched {' '.join(args)}` failed ({done.returncode}): {done.stderr}")
    return done.stdout


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def make_tasks(work: Path) -> list[dict[str, object]]:
    """Real files for the agents, and the tasks that name them (some doomed to fail)."""
    inputs = work / "inputs"
    inputs.mkdir()
    for i in range(8):
        (inputs / f"notes{i}.txt").write_text("the quick brown fox jumps\n" * (i + 1) + f"end {i}\n")
        (inputs / f"mod{i}.py").write_text(f"def f{i}(x):\n    return x * {i}\n")
    (inputs / "broken.py").write_text("def broken(:\n")
    tasks: list[dict[str, object]] = []
    for i in range(10):
        tasks.append({"queue": "words", "title": f"count words in notes{i % 8}.txt", "priority": i % 3,
                      "payload": {"file": str(inputs / f"notes{i % 8}.txt")}})
    tasks.append({"queue": "words", "title": "count words in gone.txt", "priority": 5,
                  "payload": {"file": str(inputs / "gone.txt")}})
    for i in range(6):
        tasks.append({"queue": "checksums", "title": f"checksum notes{i}.txt", "priority": 1,
                      "payload": {"file": str(inputs / f"notes{i}.txt")}})
    for i in range(6):
        tasks.append({"queue": "builds", "title": f"compile mod{i}.py",
                      "payload": {"file": str(inputs / f"mod{i}.py")}})
    tasks.append({"queue": "builds", "title": "compile broken.py", "max_attempts": 2,
                  "payload": {"file": str(inputs / "broken.py")}})
    for i in range(6):
        tasks.append({"queue": "sums", "title": f"sum batch {i}", "payload": {"numbers": list(range(i + 3))}})
    for i in range(2):
        tasks.append({"queue": "notes", "title": f"write note {i}", "assignee": "scribe",
                      "payload": {"text": f"note {i}"}})
    return tasks


def pull_worker_step(env: dict[str, str]) -> str | None:
    """One claim by the pull worker `scribe`; its real work: write the note to a file."""
    task = json.loads(sched(env, "worker", "claim", "--agent", "scribe", "--json"))["task"]
    if task is None:
        return None
    note = Path(env["SCHED_HOME"]) / f"note-{task['task_id']}.txt"
    note.write_text(task["payload"]["text"] + "\n")
    sched(env, "worker", "complete", str(task["task_id"]), "--token", task["token"],
          "--result", json.dumps({"wrote": str(note)}))
    return f"scribe (pull worker) completed #{task['task_id']} {task['title']}"


def watch(env: dict[str, str], total: int) -> None:
    """Show progress until every task has finished (succeeded or dead)."""
    last = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        done_by_puller = pull_worker_step(env)
        if done_by_puller:
            print(f"  {done_by_puller}")
        queues = json.loads(sched(env, "status", "--json"))["queues"]
        count = {k: sum(q[k] for q in queues.values()) for k in ("queued", "assigned", "running",
                                                                  "succeeded", "dead")}
        line = (f"  succeeded {count['succeeded']:>2}/{total}  dead {count['dead']}  "
                f"running {count['running']}  assigned {count['assigned']}  queued {count['queued']}")
        if line != last:
            print(line, flush=True)
            last = line
        if count["succeeded"] + count["dead"] == total:
            return
        time.sleep(0.3)
    sys.exit("demo: the work did not finish within 5 minutes")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="sched-demo-") as tmp:
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCHED_")}
        env.update(SCHED_HOME=str(work), PYTHONPATH=str(ROOT))
        say(f"a fresh workspace in {work}")
        sched(env, "init")
        (work / "agent-control.json").write_text(json.dumps(FLEET, indent=2))
        # short backoffs, so retries happen within the demo (the defaults start at 30 s)
        (work / "sched.toml").write_text("backoff_base_seconds = 1\nbackoff_max_seconds = 4\n")
        print(sched(env, "agents", "validate"), end="")
        print(sched(env, "agents", "list"), end="")

        say("the daemon starts (sched run --interval 0.5)")
        log = (work / "daemon.log").open("w")
        daemon = subprocess.Popen([*SCHED, "run", "--interval", "0.5"], env=env, stderr=log)
        try:
            say("32 tasks submitted in one transaction (sched submit --file)")
            batch = work / "tasks.jsonl"
            tasks = make_tasks(work)
            batch.write_text("".join(json.dumps(t) + "\n" for t in tasks))
            ids = json.loads(sched(env, "submit", "--file", str(batch), "--json"))["task_ids"]
            print(f"submitted tasks {ids[0]}..{ids[-1]}")
            say("agents at work (live)")
            watch(env, len(tasks))
            dead = json.loads(sched(env, "tasks", "--status", "dead", "--json"))["tasks"]
            broken = next(t for t in dead if t["title"] == "compile broken.py")
            say(f"fix broken.py and put task {broken['task_id']} back (sched requeue)")
            # (listings leave payloads out; `show` has the whole task)
            shown = json.loads(sched(env, "show", str(broken["task_id"]), "--json"))
            Path(shown["task"]["payload"]["file"]).write_text("def fixed():\n    return 1\n")
            print(sched(env, "requeue", str(broken["task_id"]), "--json"), end="")
            watch(env, len(tasks))
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
            log.close()
        say(f"the daemon stopped with exit code {daemon.returncode}; its log:")
        lines = (work / "daemon.log").read_text().splitlines()
        for line in [*lines[:4], f"  ... {max(len(lines) - 7, 0)} more lines ...", *lines[-3:]]:
            print(f"  {line}")

        say("sched status")
        print(sched(env, "status"), end="")
        say("the dead-letter queue (sched tasks --status dead)")
        print(sched(env, "tasks", "--status", "dead"), end="")
        dead = json.loads(sched(env, "tasks", "--status", "dead", "--json"))["tasks"]
        if dead:
            task_id = str(dead[0]["task_id"])
            say(f"why task {task_id} died (sched show {task_id} --json: its failures)")
            for event in json.loads(sched(env, "show", task_id, "--json"))["events"]:
                data = event["data"]
                if event["type"] in ("TaskFailed", "TaskDeadLettered"):
                    detail = data.get("error") or data.get("reason")
                    print(f"  seq {event['seq']:>3} {event['type']:<16} {data.get('agent', '')} {detail}")
            say(f"why task {task_id} went where it went (sched explain {task_id}, first attempt)")
            lines = sched(env, "explain", task_id).splitlines()
            first = next(i for i, line in enumerate(lines) if line.startswith("attempt"))
            print("\n".join(lines[first:first + 6]))
        say("the last hour in figures (sched metrics)")
        print(sched(env, "metrics", "--since", "1h"), end="")
        say("sched health (exit 0 healthy, 1 degraded, 2 unhealthy)")
        print(sched(env, "health", ok=(0, 1, 2)), end="")
        say("what if the words agents had twice the slots and nothing was retried? (sched simulate)")
        whatif = work / "what-if-agents.json"
        whatif.write_text(json.dumps([dict(a, maxConcurrency=a["maxConcurrency"] * 2)
                                      if a["agentType"] == "words" else a for a in FLEET]))
        print(sched(env, "simulate", "--interval", "0.5", "--agents", str(whatif), "--set",
                    "max_attempts=1"), end="")
        say("sched replay --verify")
        print(sched(env, "replay", "--verify"), end="")


if __name__ == "__main__":
    main()
