"""Helpers for the manifest tests (no tests here): write a small manifest, collect its problems."""

from __future__ import annotations

import textwrap
from pathlib import Path

from desync_decl.manifest import Manifest, ManifestError, load_manifest


def write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    """Every problem line, with the temporary folder cut off: ``m.yaml:3:5: ...``."""
    path = write(tmp_path, text)
    try:
        load_manifest(path, env=env or {})
    except ManifestError as e:
        return [str(p).removeprefix(f"{tmp_path}/") for p in e.problems]
    return []


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Manifest:
    return load_manifest(write(tmp_path, text), env=env or {})
