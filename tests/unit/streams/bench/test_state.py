"""The state section: the codec's bytes beside pickle's."""

from __future__ import annotations

from streams.bench.state import state_section


def test_state_section_reports_codec_and_pickle_sizes() -> None:
    rows = state_section()
    assert [r.section for r in rows] == ["state", "state"]
    assert all(r.value > 0 and r.baseline_value for r in rows)
    assert rows[1].value > rows[0].value  # the long-term vector costs bytes
