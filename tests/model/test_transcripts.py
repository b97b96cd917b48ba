"""model.transcripts: WebVTT, SRT and plain text in and out."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.transcripts import (
    FolderNames,
    Segment,
    Transcript,
    TranscriptError,
    parse_srt,
    parse_transcript,
    parse_vtt,
    read_transcript,
    sidecar_of,
    texts_in_spans,
)

VTT = """WEBVTT - a cooking show

NOTE written by hand

intro
00:00.500 --> 00:02.000 align:start position:10%
<v Anna>Crack the <b>eggs</b></v>
into the bowl

00:01:02.250 --> 00:01:04.000
Salt &amp; pepper
"""

SRT = """1
00:00:01,000 --> 00:00:02,500
<i>Hello</i> there

2
00:00:03,000 --> 00:00:04,000
{\\an8}General Kenobi
"""


def test_webvtt_cues_timings_and_markup() -> None:
    t = parse_vtt(VTT)
    assert [(s.start, s.end) for s in t.segments] == [(0.5, 2.0), (62.25, 64.0)]
    assert t.segments[0].text == "Crack the eggs into the bowl"
    assert t.segments[1].text == "Salt & pepper"
    assert t.text == "Crack the eggs into the bowl Salt & pepper"
    assert t.segments[0].middle == pytest.approx(1.25)


def test_srt_cues_and_style_tags() -> None:
    t = parse_srt(SRT)
    assert [s.text for s in t.segments] == ["Hello there", "General Kenobi"]
    assert t.segments[0].start == 1.0 and t.segments[0].end == 2.5


def test_srt_without_blank_lines_between_cues() -> None:
    squashed = SRT.replace("\n\n", "\n")
    t = parse_srt(squashed)
    assert [s.text for s in t.segments] == ["Hello there", "General Kenobi"]


def test_sniffing_picks_the_format_from_the_content() -> None:
    assert len(parse_transcript("\ufeff" + VTT).segments) == 2
    assert len(parse_transcript(SRT.replace("\n", "\r\n")).segments) == 2
    plain = parse_transcript("  just some\nwords  ", duration_s=12.0)
    assert plain.segments == [Segment(0.0, 12.0, "just some words")]
    assert not parse_transcript("   \n")
    assert parse_transcript("").segments == []


def test_bad_transcripts_raise_typed_errors() -> None:
    with pytest.raises(TranscriptError, match="WEBVTT"):
        parse_vtt("00:00.000 --> 00:01.000\nno header\n")
    with pytest.raises(TranscriptError, match="ends"):
        parse_vtt("WEBVTT\n\n00:05.000 --> 00:01.000\nbackwards\n")
    with pytest.raises(TranscriptError, match="no SRT cues"):
        parse_srt("this is not an srt file")
    # Hours of 305, 400 and 5,000 digits overflowed a float, a float's rounding and
    # Python's integer-digit limit: an OverflowError or a ValueError, answered 500.
    for digits in (7, 305, 400, 5000):
        hours = "1" * digits
        with pytest.raises(TranscriptError, match=f"{digits}-digit hours"):
            parse_vtt(f"WEBVTT\n\n{hours}:00:00.000 --> {hours}:00:01.000\nhi\n")
    long = parse_vtt("WEBVTT\n\n000123456:00:00.000 --> 123456:00:01.000\nhi\n")
    assert long.segments[0].start == 123456 * 3600.0
    # Zeros in front passed the digit check, then int() raised a plain ValueError past
    # Python's 4,300 digits: a 500.
    padded = "0" * 5000 + "1"
    zeros = parse_vtt(f"WEBVTT\n\n{padded}:00:00.000 --> {padded}:00:01.000\nhi\n")
    assert zeros.segments[0].start == 3600.0


def test_text_read_again_from_the_stored_vtt_is_the_same() -> None:
    """The stored VTT is read again for moments and training: unescaped, a cue saying
    "if x < 10 and y > 2 then" came back as "if x  2 then"."""
    t = parse_vtt("WEBVTT\n\n00:00.000 --> 00:05.000\nif x &lt; 10 and y &gt; 2 &amp; then\n")
    assert t.text == "if x < 10 and y > 2 & then"
    assert parse_vtt(t.to_vtt()).text == t.text
    assert texts_in_spans(t.to_vtt(), [(0.0, 5.0)], None) == [t.text]


def test_a_line_of_spaces_is_vtt_cue_text_not_its_end() -> None:
    """YouTube's captions open each cue with a line of one space: the cue's words were
    taken for the next one's."""
    t = parse_vtt("WEBVTT\n\n00:00.000 --> 00:02.000\n \nhello there\n\n"
                  "00:02.000 --> 00:04.000\nagain\n")  # fmt: skip
    assert [s.text for s in t.segments] == ["hello there", "again"]


def test_round_trip_through_vtt_and_srt() -> None:
    t = Transcript([Segment(0.0, 1.5, "one"), Segment(3661.25, 3662.0, "two")])
    assert parse_vtt(t.to_vtt()).segments == t.segments
    assert parse_srt(t.to_srt()).segments == t.segments
    assert "01:01:01.250 --> 01:01:02.000" in t.to_vtt()


def test_nearest_segments_by_middle_time() -> None:
    t = Transcript([Segment(float(s), s + 1.0, f"w{s}") for s in range(6)] + [Segment(9, 10, "")])
    assert [s.text for s in t.nearest(2.6, 3)] == ["w2", "w3", "w1"]
    assert [s.text for s in t.nearest(100.0, 2)] == ["w5", "w4"]  # empty cues never count
    assert Transcript([]).nearest(1.0, 3) == []


def test_read_sidecar_files(tmp_path: Path) -> None:
    (tmp_path / "a.vtt").write_text(VTT, encoding="utf-8-sig")
    (tmp_path / "a.srt").write_text(SRT)
    (tmp_path / "a.txt").write_text("a plain narration")
    (tmp_path / "bad.vtt").write_bytes(b"\xff\xfe\x00broken")
    assert len(read_transcript(tmp_path / "a.vtt").segments) == 2
    assert len(read_transcript(tmp_path / "a.srt").segments) == 2
    assert read_transcript(tmp_path / "a.txt", duration_s=4.0).segments[0].end == 4.0
    with pytest.raises(TranscriptError, match="cannot read"):
        read_transcript(tmp_path / "bad.vtt")
    with pytest.raises(TranscriptError):
        read_transcript(tmp_path / "missing.vtt")


def test_a_sidecar_is_found_in_any_case_the_same_case_first(tmp_path: Path) -> None:
    take = tmp_path / "Take 3.MP4"
    take.write_bytes(b"")
    assert sidecar_of(take) is None
    (tmp_path / "take 3.txt").write_text("plain")
    assert sidecar_of(take) == tmp_path / "take 3.txt"  # a camera's and an editor's names
    (tmp_path / "TAKE 3.SRT").write_text("")
    assert sidecar_of(take) == tmp_path / "TAKE 3.SRT"  # .srt before .txt
    (tmp_path / "take 3.vtt").write_text("")
    (tmp_path / "Take 3.vtt").write_text("")
    assert sidecar_of(take) == tmp_path / "Take 3.vtt"  # the same case first
    names = FolderNames.of(["Take 3.MP4", "take 3.srt"])  # read by the caller: only it
    (tmp_path / "take 3.srt").write_text("")
    assert sidecar_of(take, names) == tmp_path / "take 3.srt"
    # Its own case with any suffix before another case: `take 3.mp4` beside it has its own.
    (tmp_path / "Take 3.srt").write_text("")
    (tmp_path / "Take 3.vtt").unlink()
    assert sidecar_of(take) == tmp_path / "Take 3.srt"
    (tmp_path / "clip.vtt").mkdir()  # a folder is no transcript
    assert sidecar_of(tmp_path / "clip.mp4") is None
