"""The command line's drawing: rich on a terminal, plain lines in a pipe or a log."""

import io

from accelc.console import Progress, plain_grid, print_rows


class Terminal(io.StringIO):
    def isatty(self):
        return True


ROWS = [("model", "m.py"), ("warning", "the saved result measured slower than eager")]


def test_rows_in_a_pipe_are_plain_and_unwrapped():
    stream = io.StringIO()
    print_rows(ROWS + [("passes", "x" * 300)], file=stream)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "model    m.py" and lines[2] == "passes   " + "x" * 300
    assert "\033" not in stream.getvalue()


def test_rows_on_a_terminal_show_warnings_in_colour():
    stream = Terminal()
    print_rows(ROWS, file=stream)
    text = stream.getvalue()
    assert "\033[" in text and "measured slower than eager" in text


def test_progress_in_a_log_keeps_the_steps_and_drops_the_per_pass_lines(monkeypatch, capsys):
    progress = Progress()
    assert not progress.tty  # pytest captures stderr: not a terminal
    for message in ("capturing with torch.export", "graph pass 1/3: remove_noops", "verifying remove_noops",
                    "verifying the captured graph", "saving the artifact"):
        progress(message)
    progress.done()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == [
        "capturing with torch.export", "verifying the captured graph", "saving the artifact"]


def test_grid_aligns_numbers_right():
    text = plain_grid(["system", "ms"], [["eager", "10.5"], ["accelc", "2.25"]], right={1})
    assert text.splitlines() == ["system    ms", "------  ----", "eager   10.5", "accelc  2.25"]
