"""Log records through the console while a verb runs, with ``logging`` loaded only
when something that logs is.

Records are written as the console writes everything (each message one escaped
line: a warning may name what an archive or a store sent); with ``--debug`` every
record, with its logger's name. ``logging`` (with ``traceback``, ``string`` and
``textwrap`` behind it, ~5 ms) was most of the stdlib a local ``extract`` loaded
only to configure it: nothing on that path logs. So unless it is loaded already,
the handler is attached right after the first import of ``logging`` (by one of our
modules when it has something to say, or by a backend's library such as paramiko
or urllib3), before anything can log through it: what is logged, and how, is the
same as when ``logging`` was imported up front.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

from desync_decl.escaping import escape_line

if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec


@contextlib.contextmanager
def logging_to(err: TextIO, *, debug: bool) -> Iterator[None]:
    """Records on ``err`` while the block runs (see the module's docstring)."""
    detach: list[Callable[[], None]] = []

    def attach() -> None:
        detach.append(_attach(err, debug=debug))

    hook = None
    if "logging" in sys.modules:
        attach()
    else:
        hook = _AfterImport("logging", attach)
        sys.meta_path.insert(0, hook)
    try:
        yield
    finally:
        if hook is not None:
            hook.leave()
        for undo in detach:
            undo()


def _attach(err: TextIO, *, debug: bool) -> Callable[[], None]:
    """Add the console's handler to the root logger; what takes it off again."""
    import logging

    class OneLineMessages(logging.Formatter):
        def formatMessage(self, record: logging.LogRecord) -> str:
            return escape_line(super().formatMessage(record))

    root = logging.getLogger()
    level = root.level
    handler = logging.StreamHandler(err)
    if debug:
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(OneLineMessages("%(levelname)s:%(name)s:%(message)s"))
        root.setLevel(logging.DEBUG)
    else:
        handler.setLevel(logging.WARNING)
        handler.setFormatter(OneLineMessages("%(message)s"))
        # paramiko logs every failed SSH connection with a traceback from its own
        # thread; the same failure reaches the store as an exception, and one line
        logging.getLogger("paramiko").setLevel(logging.CRITICAL)
        # "Connection pool is full, discarding connection": more threads than pooled
        # connections (apply -j N shares a store's pool); costs a reconnect, tells
        # the user nothing they can act on
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    root.addHandler(handler)

    def detach() -> None:
        root.removeHandler(handler)
        root.setLevel(level)

    return detach


class _AfterImport:
    """A meta-path finder that lets the module ``name`` be found and loaded as it
    would be, and calls ``then()`` once it has run (before its importer goes on);
    it leaves ``sys.meta_path`` at its first call for ``name``."""

    def __init__(self, name: str, then: Callable[[], None]) -> None:
        self.name, self.then = name, then

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if fullname != self.name:
            return None
        self.leave()
        for finder in sys.meta_path:  # the finders after this one, as they would be asked
            find = getattr(finder, "find_spec", None)
            spec = None if find is None else find(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _Then(spec.loader, self.then)
                return spec
        return None

    def leave(self) -> None:
        with contextlib.suppress(ValueError):  # left already
            sys.meta_path.remove(self)


class _Then:
    """``loader``, and ``then()`` after it ran a module; the module is left with
    ``loader`` as its loader, as if loaded without this."""

    def __init__(self, loader: Any, then: Callable[[], None]) -> None:
        self.loader, self.then = loader, then

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    def create_module(self, spec: ModuleSpec) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.loader.exec_module(module)
        module.__loader__ = module.__spec__.loader = self.loader
        self.then()
