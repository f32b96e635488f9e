"""simulate's progress bar (tqdm): quiet when stderr is not a TTY, drawn with --progress, one line per policy."""

import io

from simulations.report import ProgressBar


def test_quiet_when_the_stream_is_not_a_tty() -> None:
    out = io.StringIO()   # isatty() is False
    bar = ProgressBar(None, out)
    for f in (0.0, 0.5, 1.0):
        bar("predictive", f)
    assert bar.enabled is False and out.getvalue() == ""


def test_progress_flag_draws_one_finished_line_per_label() -> None:
    out = io.StringIO()
    bar = ProgressBar(True, out)
    for label in ("predictive", "reactive"):
        for f in (0.0, 0.25, 0.5, 1.0):
            bar(label, f)
    lines = out.getvalue().replace("\r", "\n").split("\n")
    done = [line for line in lines if line.endswith("100%")]
    assert [line.split()[0] for line in done] == ["predictive", "reactive"]
    assert all("#" * 30 in line for line in done)
    assert out.getvalue().endswith("\n")          # the last bar is closed, the next output starts a line
