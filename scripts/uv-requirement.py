"""Print the pip requirement for the uv that uv.lock pins, with every file's hash.

`make install` bootstraps uv into the venv with `pip install --require-hashes` from this line,
so the tool that installs the lock is itself the locked, hash-checked version."""

import sys
import tomllib
from pathlib import Path

lock = tomllib.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "uv.lock").read_text())
uv = next(p for p in lock["package"] if p["name"] == "uv")
hashes = [w["hash"] for w in uv.get("wheels", [])] + (
    [uv["sdist"]["hash"]] if "sdist" in uv else []
)
print(f"uv=={uv['version']} " + " ".join(f"--hash={h}" for h in hashes))
