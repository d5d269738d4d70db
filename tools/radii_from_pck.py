"""Fill the radii in shaperesolver/base/bodytable.py from a NAIF text PCK (pck00011.tpc).

Usage: python tools/radii_from_pck.py PATH/TO/pck00011.tpc

Only assignments inside ``\\begindata`` blocks count (values NAIF leaves in comments,
such as Hartley 2's, are not data).  Bodies without ``BODYnnn_RADII`` get ``None``.
Run it again with a newer PCK and update shaperesolver/base/bodies-radii-source.md.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

TABLE = Path(__file__).resolve().parent.parent / "shaperesolver" / "base" / "bodytable.py"


def pck_radii(text: str) -> dict[int, list[float]]:
    data = "\n".join(re.findall(r"\\begindata(.*?)(?=\\begintext|\Z)", text, re.S))
    out = {}
    for m in re.finditer(r"BODY(-?\d+)_RADII\s*=\s*\(([^)]*)\)", data):
        out[int(m.group(1))] = [float(v.replace("D", "E").replace("d", "e")) for v in m.group(2).split()]
    return out


def main(pck: str) -> None:
    radii = pck_radii(Path(pck).read_text(encoding="latin-1"))
    text = TABLE.read_text(encoding="utf-8")
    head, _, _ = text.partition("TABLE = (")
    rows = ast.literal_eval(text[len(head) + len("TABLE = "):])
    rows = [(name, naif_id, naif_name, aliases, tuple(radii[naif_id]) if naif_id in radii else None)
            for name, naif_id, naif_name, aliases, _ in rows]
    TABLE.write_text(head + "TABLE = (\n" + "".join(f"    {row!r},\n" for row in rows) + ")\n", encoding="utf-8")
    missing = [row[0] for row in rows if row[4] is None]
    print(f"{len(rows) - len(missing)} bodies with radii; none in the PCK for: {', '.join(missing)}")


if __name__ == "__main__":
    main(sys.argv[1])
