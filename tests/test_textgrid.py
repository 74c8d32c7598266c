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


@pytest.mark.parametrize("words, match", [
    ([(0.0, 0.5, "dog"), (1.2, 1.7, "ran"), (0.5, 1.2, "far")],
     r"tier 'words' interval \[3\] \(0.5 – 1.2 s, 'far'\): out of time order \(interval \[2\] starts later, at "
     r"1.2 s\)"),
    ([(0.0, 0.5, "dog"), (0.4, 1.0, "ran")], r"tier 'words' interval \[2\] \(0.4 – 1 s, 'ran'\): overlaps interval "
                                             r"\[1\], which ends at 0.5 s"),
    ([(-30.0, 0.5, "dog"), (0.5, 1.0, "ran")], r"tier 'words' interval \[1\] \(-30 – 0.5 s, 'dog'\): times must be "
                                               r"finite and ≥ 0"),
    ([(0.0, 0.5, "dog"), (0.9, 0.6, "ran")], r"tier 'words' interval \[2\] \(0.9 – 0.6 s, 'ran'\): ends before it "
                                             r"starts"),
])
def test_intervals_out_of_order_overlapping_or_negative_are_refused(tmp_path, words, match):
    """Readers index frames and TRs by these times: a negative one wraps, unsorted or overlapping ones relabel."""
    grid = TextGrid(0.0, 2.0, [Tier("phones", [Interval(0.0, 2.0, "D")]),
                               Tier("words", [Interval(*w) for w in words])])
    write_textgrid(grid, tmp_path / "s.TextGrid")                         # the writer takes what it is given
    with pytest.raises(TextGridError, match=rf"^{tmp_path / 's.TextGrid'}: {match}$"):
        read_textgrid(tmp_path / "s.TextGrid")
    touching = [Interval(0.0, 0.5, "dog"), Interval(0.5, 0.5, ""), Interval(0.5 - 1e-7, 1.0, "ran")]
    parse_textgrid(format_textgrid(TextGrid(0.0, 2.0, [Tier("words", touching)])))   # rounding: accepted
