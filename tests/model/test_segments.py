"""Moments of a long file: segment spans, the windows that tile a file, which windows
make up each segment, what the transcript says in each, and their embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.embedding import embed_segments, embed_windows
from model.factory import build_model
from model.media.media_info import MediaInfo
from model.media.segments import overlap_weights, segment_spans, tiling_window_count, window_members
from model.media.windows import Windows, window_starts
from model.transcripts import Segment, Transcript


def test_spans_cover_the_file_with_overlap_and_end_at_its_end() -> None:
    assert segment_spans(25.0, 10.0, 5.0) == [(0, 10), (5, 15), (10, 20), (15, 25)]
    assert segment_spans(27.5, 10.0, 5.0)[-1] == (20, 27.5)  # the last one is shorter
    assert segment_spans(30.0, 10.0, 10.0) == [(0, 10), (10, 20), (20, 30)]  # no overlap
    assert segment_spans(10.0, 10.0, 5.0) == []  # one segment long: the file is its moment
    assert segment_spans(None, 10.0, 5.0) == []
    with pytest.raises(ValueError, match="hop"):
        segment_spans(60.0, 10.0, 12.0)


def test_tiling_windows_leave_no_second_out() -> None:
    for duration in (2.5, 11.0, 60.0, 3600.0):
        n = tiling_window_count(duration, 2.0)
        starts = window_starts(duration, 2.0, n)
        assert starts[0] == 0 and starts[-1] + 2.0 == pytest.approx(duration)
        assert np.diff(starts).max() <= 2.0  # consecutive windows touch or overlap


def test_each_segment_takes_the_windows_whose_middle_it_holds() -> None:
    starts = window_starts(25.0, 2.0, tiling_window_count(25.0, 2.0))
    spans = segment_spans(25.0, 10.0, 5.0)
    members = window_members(starts, 2.0, spans)
    middles = starts + 1.0
    for (start, end), chosen in zip(spans, members, strict=True):
        assert chosen.size > 0
        assert ((middles[chosen] >= start) & (middles[chosen] < end)).all()
    # A span shorter than the window spacing still gets the nearest window.
    assert window_members(np.array([0.0, 4.0]), 2.0, [(2.5, 2.6)])[0].tolist() == [0]
    assert overlap_weights(spans, 12.0, 18.0).tolist() == [0.0, 3.0, 6.0, 3.0]


def test_a_segment_says_what_its_timed_cues_say() -> None:
    said = Transcript([Segment(1, 4, "a drum"), Segment(12, 14, "a bell"), Segment(0, 60, "all")])
    assert said.text_in(0, 10) == "a drum all"
    assert said.text_in(0, 10, max_cue_s=30) == "a drum"  # a cue over the whole file is no place
    assert said.text_in(10, 20, max_cue_s=30) == "a bell"
    assert said.text_in(20, 30, max_cue_s=30) == ""


def test_segment_vectors_are_means_of_their_windows_and_the_file_of_them_all() -> None:
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    cfg = model.config
    n = tiling_window_count(25.0, cfg.clip_seconds)
    starts = window_starts(25.0, cfg.clip_seconds, n)
    audio = np.random.default_rng(0).uniform(-1, 1, (n, cfg.audio_samples)).astype(np.float32)
    info = MediaInfo.__new__(MediaInfo)  # only carried along, never read here
    windows = Windows(video=None, audio=audio, starts_s=starts, info=info)
    spans = segment_spans(25.0, 10.0, 5.0)
    whole, parts = embed_segments(model, windows, "audio", spans)
    for space in whole:
        every = embed_windows(model, "audio", audio, np.arange(n), n)[space]
        members = window_members(starts, cfg.clip_seconds, spans)
        for k, chosen in enumerate(members):
            mean = every[chosen].sum(axis=0)
            np.testing.assert_allclose(parts[space][k], mean / np.linalg.norm(mean), atol=1e-5)
        np.testing.assert_allclose(
            whole[space], embed_windows(model, "audio", audio)[space][0], atol=1e-5
        )
        assert parts[space].shape == (len(spans), whole[space].shape[0])
