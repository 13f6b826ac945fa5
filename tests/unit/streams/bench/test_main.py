"""The ``bench`` command: its options and the sections it accepts."""

from __future__ import annotations

from click.testing import CliRunner

from streams.bench.main import bench_command


def test_command_rejects_unknown_sections() -> None:
    result = CliRunner().invoke(bench_command, ["--sections", "stream,bogus"])
    assert result.exit_code == 2
    assert "choose from" in result.output
    help_text = CliRunner().invoke(bench_command, ["--help"]).output
    assert "--quick" in help_text and "--out" in help_text
