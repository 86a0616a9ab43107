"""Extreme option values (issue 15, class 4): every CLI option is checked before any work starts, and a range
error names the allowed range."""

from __future__ import annotations

import pytest

from streamer import cli

from conftest import one_line


@pytest.mark.parametrize("args,words", [
    (["--fps", "1e308"], "--fps"), (["--fps", "0"], "--fps"), (["--fps", "nan"], "--fps"), (["--fps", "61"], "--fps"),
    (["--start", "1e20"], "--start"), (["--start", "-1"], "--start"), (["--end", "inf"], "--end"),
    (["-q", "a", "--at", "99:99:99"], "--at"), (["-q", "a", "--at", "1:60"], "--at"),
    (["-q", "a", "--at", "x"], "--at"),
    (["--budget", "0"], "--budget"), (["--budget", "7"], "--budget"), (["--budget", "10000001"], "--budget"),
    (["--budget", "1e3"], "--budget"), (["--chunk-slack", "-1"], "--chunk-slack"),
    (["--max-new-tokens", "0"], "--max-new-tokens"), (["--max-new-tokens", "4097"], "--max-new-tokens"),
    (["--chunk-frames", "0"], "--chunk-frames"), (["--chunk-frames", "257"], "--chunk-frames"),
    (["--max-side", "8"], "--max-side"), (["--max-side", "100000"], "--max-side"),
    (["--device", "warp-drive"], "device"), (["--dtype", "int3"], "dtype"),
    (["--start", "10", "--end", "5"], "end"), (["-q", "nul\x00"], "control character"),
    (["-q", "a", "--at", "1", "--at", "2"], "--at"),
])
def test_every_option_is_checked_before_any_work(video, monkeypatch, capsys, args, words):
    def no_work(*args, **kwargs):
        raise AssertionError("work started before the options were checked")

    monkeypatch.setattr(cli, "open_source", no_work)
    monkeypatch.setattr("streamer.models.registry.load_model", no_work)
    try:
        code = cli.main([video, *args])
    except SystemExit as stop:  # argparse's own exit
        code = stop.code
    line = one_line(capsys.readouterr().err)
    assert code == 2 and words in line, line


def test_range_errors_name_the_allowed_range(video, capsys):
    with pytest.raises(SystemExit):
        cli.main([video, "--fps", "1e308"])
    assert "(0, 60]" in capsys.readouterr().err


@pytest.mark.parametrize("text,seconds", [("75", 75), ("75.5", 75.5), ("1:15", 75), ("01:01:15", 3675),
                                          ("0", 0), ("100:00:00", 360000)])
def test_times_parse(text, seconds):
    assert cli.parse_time(text) == seconds
