"""The label scanner's one-line fast paths read exactly what its general path reads.

``pvlscan.scan`` tries a few regular expressions for the common lines (``Name = value``
with a plain or quoted value and units, ``End_Group``/``End_Object`` alone on a line,
blank lines) before its general path.  Here labels made of such lines and of their near
misses (continuations, sequences, comments, CR LF, odd casing, ``End_Group = Name``,
closers that do not match, quotes spanning lines) are scanned twice: as shipped, and
with the fast paths switched off.  The statements, aggregates and errors must be equal.
"""

from __future__ import annotations

import re

import cubes
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shaperesolver.cube import pvlscan

NEVER = re.compile(r"(?!)")


def _outcome(text: str):
    try:
        sc = pvlscan.scan(text)
    except pvlscan.ScanError as exc:
        return type(exc).__name__, str(exc)
    return sc.statements, [(a.kind, a.name, a.path, a.start, a.end_line, a.end) for a in sc.aggregates], sc.end


def _both(text: str, monkeypatch: pytest.MonkeyPatch):
    fast = _outcome(text)
    with monkeypatch.context() as m:
        m.setattr(pvlscan, "_SIMPLE", NEVER)
        m.setattr(pvlscan, "_CLOSE", NEVER)
        general = _outcome(text)
    return fast, general


NAMES = st.sampled_from(["TargetName", "ShapeModel", "StartByte", "^Core", "Name", "Bytes", "INS-1_X", "a.b:c"])
PLAIN = st.sampled_from(["Mars", "1.877", "-5", "$base/dems/x.cub", "/vsicurl/https://h/x.tif", "N/A", "a-b",
                         "trailing-", "it's", "x,y", "Null", "2008-01-01T00:00:00.000"])
QUOTED = st.sampled_from(['"LUNAR  RECONNAISSANCE"', '"a\tb"', '""', '"two\n  lines"', "'single'", '"un', '"x" y'])
SEQ = st.sampled_from(["(Table, $base/kernels/spk/de430.bsp)", "(1, 2,\n   3)", "{a, b}", "(unclosed"])
UNITS = st.sampled_from(["", " <seconds>", "<K>", " <micrometers>", " <a>b", " <open"])
SPACE = st.sampled_from(["", " ", "  ", "\t", "    "])
COMMENT = st.sampled_from(["", " # note", " /* c */", " // c", " /* open"])
CLOSERS = st.sampled_from(["End_Group", "END_GROUP", "EndGroup", "end_object", "End_Object", "EndObject",
                           "End_Group = Kernels", "End_Groups", "End"])
OPENERS = st.sampled_from(["Object = IsisCube", "Group = Kernels", "Group = Instrument", "Object = \"Core\"",
                           "BEGIN_GROUP = Mapping", "Object = Label"])


@st.composite
def lines(draw) -> str:
    kind = draw(st.integers(0, 6))
    indent = draw(SPACE)
    if kind == 0:
        value = draw(st.one_of(PLAIN, QUOTED, SEQ))
        return f"{indent}{draw(NAMES)}{draw(SPACE)}={draw(SPACE)}{value}{draw(UNITS)}{draw(COMMENT)}{draw(SPACE)}"
    if kind == 1:
        return f"{indent}{draw(OPENERS)}{draw(SPACE)}"
    if kind == 2:
        return f"{indent}{draw(CLOSERS)}{draw(SPACE)}"
    if kind == 3:
        return draw(SPACE)  # a blank line
    if kind == 4:
        return f"{indent}{draw(NAMES)} = {draw(PLAIN)}-\n{draw(SPACE)}{draw(PLAIN)}"  # a dash continuation
    if kind == 5:
        return f"{indent}/* a comment line */"
    return f"{indent}{draw(NAMES)} = {draw(PLAIN)}{draw(UNITS)}"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.lists(lines(), max_size=40), nl=st.sampled_from(["\n", "\r\n"]), ended=st.booleans())
def test_made_up_labels_read_the_same_with_and_without_the_fast_paths(body, nl, ended, monkeypatch):
    text = nl.join(body) + (f"{nl}End{nl}" if ended else nl)
    fast, general = _both(text, monkeypatch)
    assert fast == general


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.lists(lines(), max_size=25))
def test_made_up_groups_in_a_real_label_read_the_same(body, monkeypatch):
    """The same lines spliced into a real label's Instrument group."""
    text = cubes.label_text("ctx_mars").replace("  End_Group\n", "\n".join(body) + "\n  End_Group\n", 1)
    fast, general = _both(text, monkeypatch)
    assert fast == general


@pytest.mark.parametrize("name", ["viking_mars", "ctx_mars", "lro_moon", "galileo_io_detached", "cassini_titan"])
def test_the_test_labels_read_the_same_and_mostly_through_the_fast_paths(name, monkeypatch):
    text = cubes.label_text(name)
    fast, general = _both(text, monkeypatch)
    assert fast == general
    taken = [0]
    real = pvlscan._SIMPLE

    class Counting:
        def match(self, *a):
            m = real.match(*a)
            taken[0] += m is not None
            return m

    monkeypatch.setattr(pvlscan, "_SIMPLE", Counting())
    pvlscan.scan(text)
    assert taken[0] >= 0.8 * (len(fast[0]) + len(fast[1]))  # (a fast path that stopped matching is a slow scanner)


def test_end_group_with_its_name_closes_the_group(tmp_path):
    """``End_Group = Kernels`` is legal PVL (ISIS reads it): it closes the group.  The
    fast path once took it for a statement named End_Group, so the group never closed."""
    from shaperesolver import read_label, write_shape_model

    text = cubes.label_text("ctx_mars")
    at = text.index("  End_Group", text.index("Group = Kernels"))
    text = text[:at] + "  End_Group = Kernels" + text[at + len("  End_Group"):]
    sc = pvlscan.scan(text)
    kernels = sc.aggregate(("IsisCube", "Kernels"))
    assert kernels is not None and text[kernels.end_line:kernels.end] == "  End_Group = Kernels\n"
    assert not [s for s in sc.statements if s.name.upper() == "END_GROUP"]
    cube = cubes.write_attached(tmp_path / "named_end.cub", text)
    write_shape_model(cube, "$base/dems/x.cub")
    lab = read_label(cube)
    assert lab.shape_model == "$base/dems/x.cub" and lab.kernels_text.endswith("End_Group = Kernels\n")
    assert lab.scan.find(("IsisCube", "Instrument"), "TargetName").value == "Mars"
