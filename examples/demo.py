"""`make demo`: sched end to end on a fresh SQLite database in a temporary workspace.

It writes a control file (2 queues, 4 agents), submits 30 tasks of mixed priorities
(some directed at one agent), then runs ticks and pull workers -- this script's own
loop over `sched worker claim/complete/fail` -- that do real work on each payload:
count words and lines of a file, checksum a file, byte-compile a Python file. Some
tasks point at files that do not exist, so they fail, are retried and end dead-lettered.
Finally it prints `status` and `replay --verify`. Every step is a real `sched` call.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SCHED = [sys.executable, "-m", "cli"]
FLEET = [
    {"agentName": "vaela", "agentType": "dev", "maxConcurrency": 3},
    {"agentName": "damien", "agentType": "dev", "maxConcurrency": 1},
    {"agentName": "oscar", "agentType": "qa", "maxConcurrency": 2},
    {"agentName": "kalis", "agentType": "qa", "maxConcurrency": 1},
]


def sched(env: dict[str, str], *args: str, check: bool = True) -> str:
    done = subprocess.run([*SCHED, *args], env=env, capture_output=True, text=True)
    if check and done.returncode != 0:
        sys.exit(f"demo: `sched {' '.join(args)}` failed ({done.returncode}): {done.stderr}")
    return done.stdout


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def make_inputs(work: Path) -> list[dict[str, object]]:
    """Real files for the agents to work on, and the 30 tasks that name them."""
    texts = work / "inputs"
    texts.mkdir()
    for i in range(8):
        (texts / f"notes{i}.txt").write_text(("the quick brown fox jumps\n" * (i + 1)) + f"end {i}\n")
        (texts / f"mod{i}.py").write_text(f"def f{i}(x):\n    return x * {i}\n")
    (texts / "broken.py").write_text("def broken(:\n")
    tasks: list[dict[str, object]] = []
    for i in range(12):
        tasks.append({"queue": "dev", "title": f"count words in notes{i % 8}.txt",
                      "priority": i % 3, "payload": {"op": "wc", "file": str(texts / f"notes{i % 8}.txt")}})
    for i in range(8):
        tasks.append({"queue": "qa", "title": f"compile mod{i}.py", "priority": 1,
                      "payload": {"op": "compile", "file": str(texts / f"mod{i}.py")}})
    for i in range(6):
        tasks.append({"queue": "dev", "title": f"checksum notes{i}.txt", "priority": 2,
                      "assignee": "damien",
                      "payload": {"op": "sha256", "file": str(texts / f"notes{i}.txt")}})
    tasks.append({"queue": "qa", "title": "compile broken.py", "priority": 0, "max_attempts": 2,
                  "payload": {"op": "compile", "file": str(texts / "broken.py")}})
    tasks.append({"queue": "qa", "title": "compile missing.py", "priority": 0, "max_attempts": 2,
                  "payload": {"op": "compile", "file": str(texts / "missing.py")}})
    tasks.append({"queue": "dev", "title": "count words in gone.txt", "priority": 3,
                  "payload": {"op": "wc", "file": str(texts / "gone.txt")}})
    tasks.append({"queue": "dev", "title": "urgent checksum", "priority": 9,
                  "payload": {"op": "sha256", "file": str(texts / "notes7.txt")}})
    return tasks


def do_work(payload: dict[str, str]) -> dict[str, object]:
    """The agents' real work; raises on bad input (missing file, syntax error)."""
    path = Path(payload["file"])
    if payload["op"] == "wc":
        text = path.read_text()
        return {"lines": text.count("\n"), "words": len(text.split())}
    if payload["op"] == "sha256":
        return {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    if payload["op"] == "compile":
        code = compile(path.read_text(), str(path), "exec")
        return {"compiled": path.name, "constants": len(code.co_consts)}
    raise ValueError(f"unknown op {payload['op']}")


def run_agent(env: dict[str, str], name: str) -> int:
    """One pull worker: claim, work, report, until sched has nothing for it."""
    finished = 0
    while True:
        task = json.loads(sched(env, "worker", "claim", "--agent", name, "--json"))["task"]
        if task is None:
            return finished
        token, task_id = task["token"], str(task["task_id"])
        try:
            result = do_work(task["payload"])
        except Exception as e:  # the agent's own failure, reported to sched
            outcome = json.loads(sched(env, "worker", "fail", task_id, "--token", token,
                                       "--error", f"{type(e).__name__}: {e}", "--json"))
            print(f"  {name:>7} failed    #{task_id:<3} {task['title']} -> {outcome['status']}",
                  flush=True)
        else:
            sched(env, "worker", "complete", task_id, "--token", token, "--result", json.dumps(result))
            print(f"  {name:>7} completed #{task_id:<3} {task['title']}: {result}", flush=True)
        finished += 1


def work_loop(env: dict[str, str]) -> None:
    """Tick, then let the four agents claim and finish work side by side (each its own
    process calls, racing for the write lock), until nothing is left."""
    for round_ in range(1, 20):
        report = json.loads(sched(env, "tick", "--json"))
        with ThreadPoolExecutor(len(FLEET)) as pool:
            finished = sum(pool.map(lambda a: run_agent(env, a["agentName"]), FLEET))
        status = json.loads(sched(env, "status", "--json"))
        waiting = sum(q["queued"] + q["assigned"] + q["running"] for q in status["queues"].values())
        print(f"round {round_}: tick assigned {len(report['assigned'])}, workers finished "
              f"{finished} attempt(s), {waiting} task(s) still waiting", flush=True)
        if waiting == 0:
            return
    sys.exit("demo: work did not drain in 20 rounds")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="sched-demo-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "SCHED_HOME": str(work), "PYTHONPATH": str(Path(__file__).parents[1])}
        env.pop("SCHED_DB", None)
        env.pop("SCHED_AGENT_CONTROL_FILE", None)
        say(f"a fresh workspace in {work}")
        sched(env, "init")
        (work / "agent-control.json").write_text(json.dumps(FLEET, indent=2))
        print(sched(env, "agents", "validate"), end="")
        say("submitting 30 tasks in one transaction (sched submit --file)")
        batch = work / "tasks.jsonl"
        batch.write_text("".join(json.dumps(t) + "\n" for t in make_inputs(work)))
        ids = json.loads(sched(env, "submit", "--file", str(batch), "--json"))["task_ids"]
        print(f"submitted tasks {ids[0]}..{ids[-1]}")
        say("what the first tick would do (sched tick --dry-run)")
        dry = json.loads(sched(env, "tick", "--dry-run", "--json"))
        for item in dry["assigned"]:
            print(f"  would assign task {item['task_id']} -> {item['agent']}")
        say("ticks and pull workers until the queues drain")
        work_loop(env)
        say("sched status")
        print(sched(env, "status"), end="")
        say("the dead-letter queue (sched tasks --status dead)")
        print(sched(env, "tasks", "--status", "dead"), end="")
        say("sched replay --verify")
        print(sched(env, "replay", "--verify"), end="")


if __name__ == "__main__":
    main()
