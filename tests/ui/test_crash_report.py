"""An unexpected error stops the dashboard with one line for the user and the traceback
in the log (ui.launch.run_reporting_crashes; Textual's public API only)."""

from __future__ import annotations

import logging

import pytest
from textual.app import App

from hypercore_tui.ui.launch import error_line, run_reporting_crashes

pytestmark = pytest.mark.timeout(60)

MESSAGE = "a bug in a handler, " + "with a long message " * 8


class Broken(App[None]):
    def on_mount(self) -> None:
        raise ZeroDivisionError(MESSAGE)


class Quits(App[None]):
    def on_mount(self) -> None:
        self.exit()


def test_a_crash_is_one_line_and_its_traceback_is_logged(
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    with caplog.at_level(logging.ERROR, logger="hypercore.ui"):
        reason = run_reporting_crashes(Broken(), headless=True)
    assert reason == f"ZeroDivisionError: {MESSAGE.strip()}"
    assert "dashboard crashed" in caplog.text and "Traceback" in caplog.text
    assert "raise ZeroDivisionError" in caplog.text
    assert capsys.readouterr().err == ""  # no traceback on the terminal


def test_a_normal_exit_reports_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_reporting_crashes(Quits(), headless=True) is None
    assert capsys.readouterr().err == ""


def test_error_line_joins_a_wrapped_message_and_ignores_the_note() -> None:
    report = ("╭── Traceback (most recent call last) ──╮\n│ x │\n╰───────────────╯\n"
              "OSError: first half\n  second half\n\nNOTE: 1 of 2 errors shown.\n")
    assert error_line(report) == "OSError: first half second half"
    assert error_line("RuntimeError: \x1b]0;title\x07") == "RuntimeError: \\x1b]0;title\\x07"
