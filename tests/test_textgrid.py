"""TextGrid round trip in Praat's long format and parsing of the short format."""
import pytest

from braintune_dist.data.textgrid import (Interval, TextGrid, TextGridError, Tier, fill_gaps,
                                          format_textgrid, parse_textgrid, read_textgrid, write_textgrid)

SHORT = '''File type = "ooTextFile"
Object class = "TextGrid"

0
2.5
<exists>
2
"IntervalTier"
"phone"
0
2.5
2
0
1.25
"AH0"
1.25
2.5
""
"IntervalTier"
"word"
0
2.5
1
0
2.5
"say ""hi"" = ok"
'''


def test_long_format_round_trip(tmp_path):
    words = fill_gaps([Interval(0.5, 1.0, "dog"), Interval(1.2, 1.7, "ran")], 0.0, 2.0)
    assert [(iv.xmin, iv.xmax, iv.text) for iv in words] == [
        (0.0, 0.5, ""), (0.5, 1.0, "dog"), (1.0, 1.2, ""), (1.2, 1.7, "ran"), (1.7, 2.0, "")]
    grid = TextGrid(0.0, 2.0, [Tier("phones", [Interval(0.0, 2.0, "D")]), Tier("words", words)])
    write_textgrid(grid, tmp_path / "s.TextGrid")
    back = read_textgrid(tmp_path / "s.TextGrid")
    assert back == grid
    assert [iv.text for iv in back.tier("words").labelled()] == ["dog", "ran"]
    assert not list(tmp_path.glob(".*tmp*"))


def test_short_format_and_quotes():
    grid = parse_textgrid(SHORT)
    assert [t.name for t in grid.tiers] == ["phone", "word"]
    assert grid.tier("phones").intervals[0] == Interval(0.0, 1.25, "AH0")
    assert grid.tier("words").intervals[0].text == 'say "hi" = ok'
    assert parse_textgrid(format_textgrid(grid)) == grid


def test_errors_name_source():
    with pytest.raises(TextGridError, match="x.TextGrid: not a Praat TextGrid"):
        parse_textgrid("hello", source="x.TextGrid")
    with pytest.raises(TextGridError, match="y.TextGrid: malformed TextGrid"):
        parse_textgrid(SHORT[: SHORT.index('"word"')], source="y.TextGrid")
    with pytest.raises(TextGridError, match="no tier named 'syllables'"):
        parse_textgrid(SHORT).tier("syllables")
