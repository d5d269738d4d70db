"""Fill ``radii_km`` in shaperesolver/base/bodies.json from a NAIF text PCK (pck00011.tpc).

Usage: python tools/radii_from_pck.py PATH/TO/pck00011.tpc

Only assignments inside ``\\begindata`` blocks count (values NAIF leaves in comments,
such as Hartley 2's, are not data).  Bodies without ``BODYnnn_RADII`` get ``null``.
Run it again with a newer PCK and update shaperesolver/base/bodies-radii-source.md.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

TABLE = Path(__file__).resolve().parent.parent / "shaperesolver" / "bodies.json"


def pck_radii(text: str) -> dict[int, list[float]]:
    data = "\n".join(re.findall(r"\\begindata(.*?)(?=\\begintext|\Z)", text, re.S))
    out = {}
    for m in re.finditer(r"BODY(-?\d+)_RADII\s*=\s*\(([^)]*)\)", data):
        out[int(m.group(1))] = [float(v.replace("D", "E").replace("d", "e")) for v in m.group(2).split()]
    return out


def main(pck: str) -> None:
    radii = pck_radii(Path(pck).read_text(encoding="latin-1"))
    table = json.loads(TABLE.read_text(encoding="utf-8"))
    for body in table:
        body["radii_km"] = radii.get(int(body["naif_id"]))
    TABLE.write_text(json.dumps(table, indent=1, ensure_ascii=False), encoding="utf-8")
    missing = [b["name"] for b in table if b["radii_km"] is None]
    print(f"{len(table) - len(missing)} bodies with radii; none in the PCK for: {', '.join(missing)}")


if __name__ == "__main__":
    main(sys.argv[1])
