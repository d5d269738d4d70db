"""Copy the real-label test set out of fetched git snapshots, checking every byte.

The files named in ``PROVENANCE.tsv`` (beside this script) are not committed to this
repository: they come from public repositories (DOI-USGS/ISIS3, GDAL's autotest data)
and live in the steering repo's ``shared/realdata/`` (see README.md here).  This
script rebuilds that directory from bare git snapshots of those repositories::

    python tests/data/real/materialise.py OUTDIR \\
        DOI-USGS/ISIS3=/path/to/ISIS3.git lqh2307/gdal=/path/to/gdal.git

Each file is taken by its recorded git blob id (``git cat-file blob``) and written
only if its SHA-256 matches the manifest.  Nothing is built or run.
"""

from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
from pathlib import Path

MANIFEST = Path(__file__).with_name("PROVENANCE.tsv")


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    mirrors = dict(arg.split("=", 1) for arg in argv[1:])
    out.mkdir(parents=True, exist_ok=True)
    bad = 0
    with MANIFEST.open(newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            gitdir = mirrors.get(row["repository"])
            if gitdir is None:
                print(f"skip {row['name']}: no snapshot given for {row['repository']}", file=sys.stderr)
                bad += 1
                continue
            data = subprocess.run(["git", f"--git-dir={gitdir}", "cat-file", "blob", row["git_blob"]],
                                  capture_output=True, check=True).stdout
            if hashlib.sha256(data).hexdigest() != row["sha256"]:
                print(f"FAIL {row['name']}: sha256 differs from the manifest", file=sys.stderr)
                bad += 1
                continue
            (out / row["name"]).write_bytes(data)
            print(f"ok   {row['name']} ({len(data)} bytes)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
