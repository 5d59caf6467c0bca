"""Manifests: YAML with positions, JSON Schema and semantic checks, a typed model.

``load_manifest(path)`` is the one entry point: it returns a ``Manifest`` or
raises ``ManifestError`` listing every problem as ``FILE:LINE:COL: message``.
The schema is ``schemas/manifest.schema.json`` (``schema_text()``); it also marks
the fields that may read ``${env:…}``, whose values no message shows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from desync_decl.manifest.loader import MAX_FILE_BYTES, Document, load_document
from desync_decl.manifest.model import (
    KINDS,
    CacheAction,
    CacheDef,
    ChopAction,
    Defaults,
    ExtractAction,
    GroupDef,
    MakeAction,
    Manifest,
    PruneAction,
    Seed,
    StoreDef,
    TarAction,
    Task,
    TaskAction,
    TrustDef,
    UntarAction,
    VerifyAction,
    build,
)
from desync_decl.manifest.problems import ManifestError, Position, Problem
from desync_decl.manifest.semantic import semantic_problems
from desync_decl.manifest.sensitive import Redactor
from desync_decl.manifest.validate import env_rule, schema_problems, schema_text

__all__ = [
    "KINDS",
    "CacheAction",
    "CacheDef",
    "ChopAction",
    "Defaults",
    "ExtractAction",
    "GroupDef",
    "MakeAction",
    "Manifest",
    "ManifestError",
    "Position",
    "Problem",
    "PruneAction",
    "Seed",
    "StoreDef",
    "TarAction",
    "Task",
    "TaskAction",
    "TrustDef",
    "UntarAction",
    "VerifyAction",
    "check_document",
    "load_manifest",
    "schema_text",
]


def load_manifest(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Manifest:
    """Read, validate and type a manifest; ``env`` (default ``os.environ``) feeds ``${env:…}``."""
    file = os.fspath(path)
    try:
        with open(file, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)  # no more: a larger file is refused unread
        if len(data) > MAX_FILE_BYTES:
            too_large = f"larger than {MAX_FILE_BYTES >> 20} MiB (a manifest may be at most that)"
            raise ManifestError([Problem(Position(file), too_large)])
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise ManifestError([Problem(Position(file), "no such file")]) from None
    except IsADirectoryError:
        raise ManifestError([Problem(Position(file), "is a directory, not a file")]) from None
    except UnicodeDecodeError as e:
        raise ManifestError([Problem(Position(file), f"not UTF-8 text: {e.reason}")]) from None
    except OSError as e:
        raise ManifestError([Problem(Position(file), f"cannot read: {e.strerror}")]) from None
    base_dir = Path(os.path.abspath(file)).parent
    doc, problems = load_document(text, file, os.environ if env is None else env, env_rule)
    if doc is None:
        raise ManifestError(problems)
    reported = {p.path for p in problems}  # e.g. an unset variable: its value is wrong too
    problems += [p for p in check_document(doc, base_dir) if p.path not in reported]
    if problems:
        redactor = Redactor.of(doc.env, base_dir)  # no message shows a value read from ${env:…}
        raise ManifestError(
            [Problem(p.position, redactor.text(p.message), p.path) for p in problems]
        )
    return build(doc, Path(file), base_dir)


def check_document(doc: Document, base_dir: Path) -> list[Problem]:
    """Schema problems, then semantic ones the schema has not already reported."""
    problems = schema_problems(doc)
    if any(p.path == ("version",) for p in problems):
        return problems  # another format: the rest would be noise
    reported = {p.path for p in problems}
    problems += [p for p in semantic_problems(doc, base_dir) if p.path not in reported]
    return problems
