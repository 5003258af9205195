"""RFC 4180 records from physical lines: quoted line breaks, escaped quotes, stray and unterminated quotes."""

from __future__ import annotations

from propensity.stages.ingest.records import ends_inside_quotes, group_records


def _records(lines: list[str], max_lines: int = 100) -> list[tuple[str, bool]]:
    return [(text, unterminated) for text, _, unterminated in group_records([(t, False) for t in lines], max_lines)]


def test_quote_state_follows_rfc_4180() -> None:
    assert ends_inside_quotes('a,"b', inside=False)
    assert not ends_inside_quotes('a,"b,c"', inside=False)
    assert ends_inside_quotes('a,"say ""hi"", ok', inside=False)  # "" is a quote inside a quoted field
    assert not ends_inside_quotes('a,5" tv,b', inside=False)  # a stray quote in an unquoted field is text
    assert not ends_inside_quotes('end",x', inside=True)
    assert ends_inside_quotes('still ""quoted""', inside=True)
    assert ends_inside_quotes('closed",x,"open again', inside=True)
    assert not ends_inside_quotes("no quotes", inside=False) and ends_inside_quotes("no quotes", inside=True)


def test_lines_are_grouped_into_records() -> None:
    lines = ["a,b", 'x,"multi', "line, with comma", 'end",z', "c,d", '"q""uote",e']
    assert _records(lines) == [("a,b", False), ('x,"multi\nline, with comma\nend",z', False), ("c,d", False),
                               ('"q""uote",e', False)]


def test_unterminated_quote_rejects_its_first_line_only() -> None:
    at_end = _records(["a,b", 'c,"never closed', "d,e", "f,g"])
    assert at_end == [("a,b", False), ('c,"never closed', True), ("d,e", False), ("f,g", False)]
    too_long = _records(['c,"open', "1", "2", "3", 'x",y', "z"], max_lines=3)
    # The open quote spans more than 3 lines: its first line is bad, the others are read again from the next
    # line on, where 'x",y' is a record of its own (its quote is a stray one).
    assert too_long == [('c,"open', True), ("1", False), ("2", False), ("3", False), ('x",y', False), ("z", False)]


def test_invalid_bytes_flag_the_whole_record() -> None:
    records = list(group_records([('a,"x', False), ('\\xFF",b', True), ("c,d", False)]))
    assert records == [('a,"x\n\\xFF",b', True, False), ("c,d", False, False)]
