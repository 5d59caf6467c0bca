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

import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import BinaryIO, TextIO

from desync_decl.escaping import escape_line, escape_text
from desync_decl.progress import NO_PROGRESS, Progress


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
        return self.raw.buffer  # type: ignore[attr-defined,no-any-return]


@dataclass
class Console:
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    binary_out: BinaryIO | None = None

    def __post_init__(self) -> None:
        self._terminal = self.err  # for the progress bar, whose own \r must act
        self.out = ShownText(self.out)  # type: ignore[assignment]
        self.err = ShownText(self.err)  # type: ignore[assignment]

    def print(self, *parts: object) -> None:
        """One line on stdout."""
        print(escape_line(" ".join(map(str, parts))), file=self.out)

    def warn(self, message: str) -> None:
        print(f"desync-decl: {escape_line(message)}", file=self.err)

    def error(self, message: str) -> None:
        """The line that ends a failed command: ``desync-decl: error: <message>``."""
        print(f"desync-decl: error: {escape_line(message)}", file=self.err)

    def note(self, message: str) -> None:
        """A line for the person at the terminal (stderr), not for a script's stdout."""
        print(escape_line(message), file=self.err)

    def log_handler(self, level: int, format: str) -> logging.Handler:
        """Log records on stderr, each message one escaped line (tracebacks keep their
        lines)."""
        handler = logging.StreamHandler(self.err)
        handler.setLevel(level)
        handler.setFormatter(_OneLineMessages(format))
        return handler

    def interactive(self) -> bool:
        """Whether stderr is a terminal (someone is watching)."""
        return self.err.isatty()

    def json(self, data: object) -> None:
        json.dump(data, self.out, indent=2)
        self.out.write("\n")

    def binary(self) -> BinaryIO:
        if self.binary_out is not None:
            return self.binary_out
        self.out.flush()
        return self.out.buffer  # type: ignore[attr-defined,no-any-return]

    def progress(self) -> Progress:
        """A bar on stderr when it is a terminal; nothing when piped."""
        return TerminalProgress(self._terminal) if self.interactive() else NO_PROGRESS


class _OneLineMessages(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_line(super().formatMessage(record))


class TerminalProgress:
    """A one-line bar: stage, bytes done/total, rate and ETA, redrawn at most 5 times a second."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._stage, self._total, self._done = "", 0, 0
        self._started = self._drawn = 0.0

    def start(self, stage: str, total: int) -> None:
        with self._lock:
            self._stage, self._total, self._done = escape_line(stage), total, 0
            self._started = time.monotonic()

    def advance(self, n: int) -> None:
        with self._lock:
            self._done += n
            now = time.monotonic()
            if now - self._drawn >= 0.2:
                self._drawn = now
                self._draw(now)

    def finish(self) -> None:
        with self._lock:
            self._draw(time.monotonic())
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self, now: float) -> None:
        elapsed = max(now - self._started, 1e-6)
        rate = self._done / elapsed
        if self._total:
            frac = min(1.0, self._done / self._total)
            bar = "#" * int(frac * 30)
            eta = (self._total - self._done) / rate if rate else 0.0
            text = (
                f"\r{self._stage:<12} [{bar:<30}] {_mib(self._done)}/{_mib(self._total)}"
                f" {rate / 1e6:6.1f} MB/s ETA {eta:4.0f}s"
            )
        else:
            text = f"\r{self._stage:<12} {self._done} done {rate:8.0f}/s"
        self._stream.write(text)
        self._stream.flush()


def _mib(n: int) -> str:
    return f"{n / 1048576:.1f}MiB"
