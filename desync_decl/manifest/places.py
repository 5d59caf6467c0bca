"""Names for places in a manifest, as messages use them.

``("tasks", 2, "extract", "seeds", 0)`` reads "'extract.seeds[0]' of task
'install app'"; ``("stores", "origin", "options")`` reads "'options' of store
'origin'".
"""

from __future__ import annotations

from typing import Any

from desync_decl.manifest.problems import DataPath

SECTIONS = {"stores": "store", "groups": "group", "caches": "cache"}


def owner(path: DataPath, data: Any) -> tuple[str | None, DataPath]:
    """The task, store, group or cache ``path`` lies in, and the rest of the path."""
    if len(path) >= 2 and path[0] == "tasks" and isinstance(path[1], int):
        return task_label(data, path[1]), path[2:]
    if len(path) >= 2 and path[0] in SECTIONS:
        return f"{SECTIONS[str(path[0])]} '{path[1]}'", path[2:]
    return None, path


def task_label(data: Any, index: int) -> str:
    """``task 'NAME'``, or ``task #N`` (from 1) for a task without a usable name."""
    tasks = data.get("tasks") if isinstance(data, dict) else None
    task = tasks[index] if isinstance(tasks, list) and index < len(tasks) else None
    name = task.get("name") if isinstance(task, dict) else None
    return f"task '{name}'" if isinstance(name, str) and name else f"task #{index + 1}"


def dotted(path: DataPath) -> str:
    """``extract.seeds[0].file``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def where(path: DataPath, data: Any) -> str:
    """A phrase naming the place: "'make.store' of task 'x'", "store 'a'", "the manifest"."""
    who, rest = owner(path, data)
    if who and rest:
        return f"'{dotted(rest)}' of {who}"
    if who:
        return who
    return f"'{dotted(rest)}'" if rest else "the manifest"
