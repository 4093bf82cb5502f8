"""Agent: count the lines, words and bytes of the file named in the payload."""

import json
import os
import sys
from pathlib import Path

payload = json.loads(Path(os.environ["SCHED_PAYLOAD_FILE"]).read_text())
try:
    data = Path(payload["file"]).read_bytes()
except OSError as e:
    sys.exit(f"cannot read {payload['file']}: {e.strerror}")
text = data.decode(errors="replace")
result = {"file": payload["file"], "lines": text.count("\n"), "words": len(text.split()),
          "bytes": len(data)}
Path(os.environ["SCHED_RESULT_FILE"]).write_text(json.dumps(result))
print(f"counted {result['words']} words in {payload['file']}")
