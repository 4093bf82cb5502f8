"""Agent: byte-compile the Python file named in the payload, as `python -m py_compile`
does, writing the bytecode into the attempt's working directory (not beside the file)."""

import json
import os
import py_compile
import sys
from pathlib import Path

payload = json.loads(Path(os.environ["SCHED_PAYLOAD_FILE"]).read_text())
cfile = Path(os.environ["SCHED_WORKDIR"]) / "compiled.pyc"
try:
    py_compile.compile(payload["file"], cfile=str(cfile), doraise=True)
except py_compile.PyCompileError as e:
    print(e.msg.strip().splitlines()[-1])
    sys.exit(1)
except OSError as e:
    sys.exit(f"cannot read {payload['file']}: {e.strerror}")
Path(os.environ["SCHED_RESULT_FILE"]).write_text(
    json.dumps({"compiled": payload["file"], "bytecode_bytes": cfile.stat().st_size}))
