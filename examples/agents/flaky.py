"""Agent: does its work (sums the numbers in the payload) but fails now and then.

Whether an attempt fails is decided from the task id and attempt number, so a run
is repeatable: roughly one attempt in three exits 1.
"""

import hashlib
import json
import os
import sys
from pathlib import Path

payload = json.loads(Path(os.environ["SCHED_PAYLOAD_FILE"]).read_text())
seed = f"{os.environ['SCHED_TASK_ID']}:{os.environ['SCHED_ATTEMPT']}".encode()
if hashlib.sha256(seed).digest()[0] % 3 == 0:
    sys.exit(f"flaky agent: transient failure on attempt {os.environ['SCHED_ATTEMPT']}")
print(json.dumps({"sum": sum(payload.get("numbers", []))}))
