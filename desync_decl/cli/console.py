"""Where a command writes: text and binary stdout, stderr, and whether they are terminals.

Tests pass in-memory streams; the real entry point passes the process's.

Text shown here often carries text from elsewhere (a store's error body, names in
an archive, a request's path), so nothing reaches a terminal unescaped: both text
streams are wrapped in ``ShownText`` (control and bidi characters written as
``\\x1b``, ``\\u202e``; only line breaks and tabs pass), and ``print``, ``warn``,
``note``, ``error`` and log records are one line each (a line break inside is
written ``\\n``, so no message can fake a line of its own). Binary output
(``binary()``) is data, passed on as it is.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO, TextIO

from desync_decl.escaping import escape_line, escape_text
from desync_decl.progress import BYTES, NO_PROGRESS, Progress, ProgressFor, no_progress_for
from desync_decl.units import human_bytes, human_duration, human_rate

REDRAW_SECONDS = 0.2
CLEAR_TO_END = "\x1b[K"  # erase what is left of the line (a longer earlier line)


class ShownText:
    """A text stream whose every write is escaped for a terminal (``escape_text``)."""

    def __init__(self, raw: TextIO) -> None:
        self.raw = raw

    def write(self, text: str) -> int:
        self.raw.write(escape_text(text))
        return len(text)

    def flush(self) -> None:
        self.raw.flush()

    def isatty(self) -> bool:
        isatty = getattr(self.raw, "isatty", None)
        return bool(isatty and isatty())

    def fileno(self) -> int:
        return self.raw.fileno()

    @property
    def buffer(self) -> BinaryIO:
        """The raw stream's bytes, for binary output (chunk data, indexes)."""
        return self.raw.buffer


class Console:
    """Where a command's lines go. A plain class, not a dataclass: every command
    imports it, and neither ``dataclasses`` (with ``inspect``) nor the generated
    methods are needed here (a few ms of every command's start-up)."""

    def __init__(
        self,
        out: TextIO | None = None,
        err: TextIO | None = None,
        binary_out: BinaryIO | None = None,
    ) -> None:
        err = sys.stderr if err is None else err
        self._terminal = err  # for the progress bar, whose own \r must act
        shown_out, shown_err = ShownText(sys.stdout if out is None else out), ShownText(err)
        self.out: TextIO = shown_out  # type: ignore[assignment]  # the methods used, not all TextIO
        self.err: TextIO = shown_err  # type: ignore[assignment]  # the methods used, not all TextIO
        self.binary_out = binary_out
        self._board: ProgressBoard | None = None

    def print(self, *parts: object) -> None:
        """One line on stdout."""
        self._line(escape_line(" ".join(map(str, parts))), self.out)

    def warn(self, message: str) -> None:
        self._line(f"desync-decl: {escape_line(message)}", self.err)

    def error(self, message: str) -> None:
        """The line that ends a failed command: ``desync-decl: error: <message>``."""
        self._line(f"desync-decl: error: {escape_line(message)}", self.err)

    def note(self, message: str) -> None:
        """A line for the person at the terminal (stderr), not for a script's stdout."""
        self._line(escape_line(message), self.err)

    def _line(self, text: str, stream: TextIO) -> None:
        """``text`` as a line of its own, never in the middle of the progress line."""
        if self._board is None:
            print(text, file=stream)
            return
        with self._board.paused():
            print(text, file=stream)
            stream.flush()  # before the line is drawn again

    def interactive(self) -> bool:
        """Whether stderr is a terminal (someone is watching)."""
        return self.err.isatty()

    def json(self, data: object) -> None:
        import json  # only the verbs that print JSON need it

        json.dump(data, self.out, indent=2)
        self.out.write("\n")

    def binary(self) -> BinaryIO:
        if self.binary_out is not None:
            return self.binary_out
        self.out.flush()
        return self.out.buffer

    def progress(self) -> Progress:
        """A bar on stderr when it is a terminal; nothing when piped."""
        return TerminalProgress(self._terminal) if self.interactive() else NO_PROGRESS

    def task_progress(self) -> ProgressFor:
        """A meter per task on one status line on stderr when it is a terminal (the
        console's own lines clear it first); nothing when piped."""
        if not self.interactive():
            return no_progress_for
        self._board = ProgressBoard(self._terminal)
        return self._board.task


class _Meter:
    """One stage's numbers (stage, done of total in its unit, since when) and how they
    read: sizes and rates in binary units, a percent and an ETA when the total is known."""

    def __init__(self) -> None:
        self.stage, self.total, self.done, self.unit = "", 0, 0, BYTES
        self.started = time.monotonic()

    def start(self, stage: str, total: int, unit: str = BYTES) -> None:
        self.stage, self.total, self.done = escape_line(stage), total, 0
        self.unit = escape_line(unit)
        self.started = time.monotonic()

    def _amount(self, n: float) -> str:
        return human_bytes(n) if self.unit == BYTES else f"{int(n)}"

    def _rate(self, rate: float) -> str:
        return human_rate(rate) if self.unit == BYTES else f"{rate:.0f}/s"

    def bar(self, now: float, width: int = 120) -> str:
        """``tar          [#####     ]  42% 105.2 MiB/250.0 MiB  18.4 MiB/s ETA 8s``,
        ``checking chunks [##   ]  20% 840/4171 chunks 350/s ETA 10s``,
        ``tar 195.7 MiB 18.4 MiB/s 11s`` (no total known). The bar is 10 to 30 cells,
        as ``width`` columns allow: the numbers and the ETA are what must show."""
        elapsed = max(now - self.started, 1e-6)
        rate = self.done / elapsed
        noun = "" if self.unit == BYTES else f" {self.unit}"
        if self.total:
            frac = min(1.0, self.done / self.total)
            eta = human_duration((self.total - self.done) / rate) if rate else "?"
            total = self._amount(self.total)  # fields of fixed widths: the bar stays put
            done = f"{self._amount(self.done):>{10 if self.unit == BYTES else len(total)}}"
            numbers = f"{100 * frac:3.0f}% {done}/{total}{noun} {self._rate(rate):>12} ETA {eta:<6}"
            stage = f"{self.stage:<12}"
            cells = max(10, min(30, width - 1 - len(stage) - len(numbers) - 4))
            return f"{stage} [{'#' * int(frac * cells):<{cells}}] {numbers}"
        if self.done:
            return (
                f"{self.stage} {self._amount(self.done)}{noun} {self._rate(rate)}"
                f" {human_duration(elapsed)}"
            )
        return f"{self.stage} {human_duration(elapsed)}"  # no counts: how long so far

    def short(self, now: float) -> str:
        """``make 33% ETA 5s``, ``checking chunks 120 chunks``, ``observe 3s``: for one
        of several."""
        if self.total:
            frac = min(1.0, self.done / self.total)
            rate = self.done / max(now - self.started, 1e-6)
            eta = f" ETA {human_duration((self.total - self.done) / rate)}" if rate else ""
            return f"{self.stage} {100 * frac:.0f}%{eta}"
        if self.done:
            noun = "" if self.unit == BYTES else f" {self.unit}"
            return f"{self.stage} {self._amount(self.done)}{noun}"
        return f"{self.stage} {human_duration(now - self.started)}"


class TerminalProgress:
    """A one-line bar: stage, bytes done/total, rate and ETA, redrawn at most 5 times a second."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._meter = _Meter()
        self._drawn = 0.0

    def start(self, stage: str, total: int, unit: str = BYTES) -> None:
        with self._lock:
            self._meter.start(stage, total, unit)

    def advance(self, n: int) -> None:
        with self._lock:
            self._meter.done += n
            now = time.monotonic()
            if now - self._drawn >= REDRAW_SECONDS:
                self._drawn = now
                self._draw(now)

    def finish(self) -> None:
        with self._lock:
            self._draw(time.monotonic())
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self, now: float) -> None:
        # cleared to the end: a shorter line (the next stage's) leaves nothing behind
        self._stream.write("\r" + self._meter.bar(now, _width(self._stream)) + CLEAR_TO_END)
        self._stream.flush()


class ProgressBoard:
    """One status line for every task running now: ``[a] make 33% | [b] observe 2s``.

    Each task gets a meter (``task``) that it closes when it ends. The line is
    cleared before the console prints anything (``paused``) and drawn again after,
    so results and the line never mix; it is cut to the terminal's width, and
    redrawn at most 5 times a second unless a stage starts.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.RLock()
        self._meters: dict[int, tuple[str, _Meter]] = {}
        self._next = 0
        self._drawn = 0.0
        self._shown = False

    def task(self, name: str) -> BoardMeter:
        with self._lock:
            key, self._next = self._next, self._next + 1
            self._meters[key] = (escape_line(name), _Meter())
        return BoardMeter(self, key)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Clear the line for the ``with`` block (something else is printed), then redraw."""
        with self._lock:
            self._clear()
            yield
            if self._meters:
                self._draw(time.monotonic())

    def _update(self, key: int, change: Callable[[_Meter], None], *, now_or_later: bool) -> None:
        with self._lock:
            if key not in self._meters:
                return
            change(self._meters[key][1])
            now = time.monotonic()
            if now_or_later or now - self._drawn >= REDRAW_SECONDS:
                self._draw(now)

    def _remove(self, key: int) -> None:
        with self._lock:
            if self._meters.pop(key, None) is not None:
                self._clear()
                if self._meters:
                    self._draw(time.monotonic())

    def _draw(self, now: float) -> None:
        self._drawn = now
        shown = list(self._meters.values())
        if len(shown) == 1:
            name, meter = shown[0]
            text = f"[{name}] {meter.bar(now, _width(self._stream) - len(name) - 3)}"
        else:
            text = " | ".join(f"[{name}] {meter.short(now)}" for name, meter in shown)
        self._stream.write("\r" + text[: _width(self._stream) - 1] + CLEAR_TO_END)
        self._stream.flush()
        self._shown = True

    def _clear(self) -> None:
        if self._shown:
            self._stream.write("\r" + CLEAR_TO_END)
            self._stream.flush()
            self._shown = False


class BoardMeter:
    """A task's meter on a ``ProgressBoard`` (a ``TaskProgress``)."""

    def __init__(self, board: ProgressBoard, key: int) -> None:
        self._board, self._key = board, key

    def start(self, stage: str, total: int, unit: str = BYTES) -> None:
        self._board._update(self._key, lambda m: m.start(stage, total, unit), now_or_later=True)

    def advance(self, n: int) -> None:
        def add(meter: _Meter) -> None:
            meter.done += n

        self._board._update(self._key, add, now_or_later=False)

    def finish(self) -> None:
        self._board._update(self._key, lambda m: None, now_or_later=True)

    def close(self) -> None:
        self._board._remove(self._key)


def _width(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (OSError, ValueError, AttributeError):
        return 80
