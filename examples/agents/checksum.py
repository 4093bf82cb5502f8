"""Agent: SHA-256 of the file named in the payload (the result is the last stdout line)."""

import hashlib
import json
import os
import sys
from pathlib import Path

payload = json.loads(Path(os.environ["SCHED_PAYLOAD_FILE"]).read_text())
digest = hashlib.sha256()
try:
    with open(payload["file"], "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            digest.update(block)
except OSError as e:
    sys.exit(f"cannot read {payload['file']}: {e.strerror}")
print(json.dumps({"file": payload["file"], "sha256": digest.hexdigest()}))
