# Copyright: desync-decl contributors
# BSD 3-Clause License (see https://opensource.org/licenses/BSD-3-Clause)
"""What the apply and extract modules share: run ``desync-decl apply --json`` on the
host and turn its report into the module's result.

The modules run the ``desync-decl`` command rather than importing the package: the
interpreter Ansible runs a module with (``ansible_python_interpreter``) need not be
the one desync-decl is installed in (a virtual environment, pipx, the
``desync_decl.core.install`` role's), nor be new enough for it; the command is the
one an operator runs by hand, so check mode is ``apply --check``, the plan that
apply itself makes, and every message, error and redaction is desync-decl's own;
and its ``--json`` report is a versioned format, not the package's internals.

Secrets: a manifest reads them from ``${env:NAME}``. desync-decl shows such values
as their reference in everything it prints; the module also hands each one (and
its URL-encoded forms) to Ansible as a ``no_log`` value, so that Ansible masks it
in the task's result and logs, whatever printed it. The ``env`` option carries
those variables to the run inside the module's arguments (``no_log``): the task's
``environment`` keyword would put them on a command line that ``-vvv`` shows.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Sequence
from urllib.parse import quote

JSON_VERSION = 1  # the version of desync-decl's --json report this module reads
ERROR_PREFIX = "desync-decl: error: "
# ``${env:NAME}``; ``$${env:NAME}`` is a literal and reads nothing (the manifest's rule)
ENV_REFERENCE = re.compile(r"(\$?)\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
MIN_SECRET = 4  # shorter values are not masked in free text (desync-decl's MIN_REDACTED)
MAX_MANIFEST_BYTES = 4 << 20  # desync-decl refuses larger manifests anyway
DIFF_ORDER = ("content", "size", "mode", "owner", "group")


def common_argument_spec() -> dict[str, Any]:
    """The options both modules take (documented in the ``common`` doc fragment)."""
    return dict(
        verify=dict(type="bool", default=False),
        state_dir=dict(type="path"),
        env=dict(type="dict", default={}, no_log=True),
        config=dict(type="path"),
        lock_timeout=dict(type="float"),
        executable=dict(type="path"),
    )


class Run:
    """One ``desync-decl apply`` of a manifest file, or of a text written to a temp file:
    ``label`` then names it in errors in place of the temp file's path, or, empty, the
    errors lose their ``FILE:LINE:COL: `` (a text the module made from its options)."""

    def __init__(
        self,
        module: Any,
        *,
        path: str | None = None,
        text: str | None = None,
        label: str | None = None,
    ) -> None:
        self.module = module
        self.label = label
        if text is not None:
            path = os.path.join(module.tmpdir, "definition.yaml")
            with open(path, "w") as f:
                f.write(text)
        self.path = str(path)
        self.env = {str(k): str(v) for k, v in module.params["env"].items()}

    def hide_secrets(self) -> None:
        """Every value the manifest reads from the environment becomes a ``no_log``
        value of the module (an unreadable manifest: desync-decl says why)."""
        try:
            with open(self.path, "rb") as f:
                text = f.read(MAX_MANIFEST_BYTES).decode("utf-8", "replace")
        except OSError:
            return
        for escaped, name in ENV_REFERENCE.findall(text):
            value = self.env.get(name, os.environ.get(name))
            if escaped or not value or len(value) < MIN_SECRET:
                continue
            self.module.no_log_values.update({value, quote(value, safe=""), quote(value)})

    def command(
        self, *, tags: Sequence[str] = (), skip_tags: Sequence[str] = (), jobs: int | None = None
    ) -> list[str]:
        """``desync-decl apply --json`` with the module's options, ``--check`` in check
        mode and ``--diff`` in diff mode."""
        p = self.module.params
        exe = p["executable"] or self.module.get_bin_path("desync-decl")
        if exe is None:
            self.module.fail_json(
                msg="desync-decl is not installed on this host (pip install desync-decl, or the"
                " desync_decl.core.install role), or set the executable option"
            )
        cmd = [exe]
        if p["config"]:
            cmd += ["--config", p["config"]]
        cmd += ["apply", self.path, "--json"]
        if tags:
            cmd += ["--tags", ",".join(tags)]
        if skip_tags:
            cmd += ["--skip-tags", ",".join(skip_tags)]
        if p["verify"]:
            cmd.append("--verify")
        if p["state_dir"]:
            cmd += ["--state-dir", p["state_dir"]]
        if p["lock_timeout"] is not None:
            cmd += ["--lock-timeout", str(p["lock_timeout"])]
        if jobs is not None:
            cmd += ["--jobs", str(jobs)]
        if self.module.check_mode:
            cmd.append("--check")
        if self.module._diff:
            cmd.append("--diff")
        return cmd

    def run(self, cmd: list[str]) -> dict[str, Any]:
        """Run ``cmd``; fail the task with desync-decl's own message unless it reported
        (a failed task is still a report: the result says which and why)."""
        self.hide_secrets()
        rc, out, err = self.module.run_command(cmd, environ_update=self.env)
        report = _report(out)
        if report is None:
            errors = self._errors(err) or [f"desync-decl exited with status {rc}"]
            self.module.fail_json(msg="; ".join(errors), errors=errors, rc=rc, cmd=cmd)
        if report.get("version") != JSON_VERSION:
            self.module.fail_json(
                msg=f"desync-decl reported in JSON version {report.get('version')!r};"
                f" this collection reads version {JSON_VERSION}",
                rc=rc,
            )
        return dict(result(report, rc, self.module._diff), cmd=cmd)

    def finish(self, res: dict[str, Any]) -> None:
        """Exit with ``res``: warnings as Ansible warnings, a failed run as a failure."""
        for task in res["tasks"]:
            for warning in task.get("warnings") or ():
                self.module.warn(f"[{task['name']}] {warning}")
        if res["failed_tasks"] or res["failed_handlers"] or res["rc"] != 0:
            self.module.fail_json(msg=failure_message(res), **res)
        self.module.exit_json(**res)

    def _errors(self, err: str) -> list[str]:
        """desync-decl's error lines (every ``FILE:LINE:COL: message`` of a manifest), the
        temp file of an inline manifest named by its label."""
        lines = []
        for line in err.splitlines():
            line = line.strip()
            if line.startswith(ERROR_PREFIX):
                line = line[len(ERROR_PREFIX) :]
            if not line:
                continue
            if self.label == "":
                line = re.sub(re.escape(self.path) + r"(:\d+:\d+)?: ", "", line)
            elif self.label is not None:
                line = line.replace(self.path, self.label)
            lines.append(line)
        return lines


def _report(out: str) -> dict[str, Any] | None:
    if not out.lstrip().startswith("{"):
        return None
    try:
        doc = json.loads(out)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def result(report: dict[str, Any], rc: int, diff: bool) -> dict[str, Any]:
    """The module's result from desync-decl's report: changed as its recap says, the
    recap, each task's result, bytes per source, and Ansible diffs."""
    tasks = report.get("tasks") or []
    handlers = report.get("handlers") or []
    recap = report.get("recap") or {}
    res: dict[str, Any] = dict(
        changed=recap.get("changed", 0) > 0,
        rc=rc,
        recap=recap,
        tasks=tasks,
        handlers=handlers,
        bytes=bytes_per_source(tasks),
        failed_tasks=[t["name"] for t in tasks if t.get("status") == "failed"],
        failed_handlers=[h["name"] for h in handlers if h.get("status") == "failed"],
    )
    if diff:
        res["diff"] = [_diff(t) for t in tasks if t.get("diff")]
    return res


def bytes_per_source(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """What the tasks that changed moved, by source, from the plan each followed (the
    same numbers ``desync-decl plan`` shows; under check mode what they would move).
    ``fetched`` is what crossed the network: remote stores' bytes as they hold them."""
    out: dict[str, Any] = dict(
        total=0, fetched=0, seeds=0, self=0, in_place=0, null=0, uploaded=0, stores={}
    )
    for task in tasks:
        if task.get("status") != "changed":
            continue
        travel = task.get("travel") or {}
        out["total"] += (travel.get("total") or {}).get("bytes", 0)
        for key, field in (("self", "self"), ("in_place", "in-place"), ("null", "null")):
            out[key] += (travel.get(field) or {}).get("bytes", 0)
        out["seeds"] += sum(s.get("bytes", 0) for s in travel.get("seeds") or ())
        out["uploaded"] += (travel.get("upload") or {}).get("bytes", 0)
        for s in travel.get("stores") or ():
            stored = s.get("stored-bytes", s.get("bytes", 0))
            mine = out["stores"].setdefault(
                s["store"], dict(chunks=0, bytes=0, stored_bytes=0, remote=s.get("remote", True))
            )
            mine["chunks"] += s.get("chunks", 0)
            mine["bytes"] += s.get("bytes", 0)
            mine["stored_bytes"] += stored
            if s.get("remote", True):
                out["fetched"] += stored
    return out


def _diff(task: dict[str, Any]) -> dict[str, str]:
    """One Ansible diff per task: its before and after, an aspect a line."""
    d = task["diff"]
    target = d.get("target", "")
    header = target if task["name"] == target else f"{target} ({task['name']})"
    return dict(
        before_header=header,
        after_header=header,
        before=_aspects(d.get("before") or {}),
        after=_aspects(d.get("after") or {}),
    )


def _aspects(side: dict[str, Any]) -> str:
    keys = [k for k in DIFF_ORDER if k in side] + [k for k in side if k not in DIFF_ORDER]
    return "".join(f"{k}: {side[k]}\n" for k in keys)


def failure_message(res: dict[str, Any]) -> str:
    """``1 of 2 tasks failed: [image] <desync-decl's message>``, and the handlers."""
    tasks = res["tasks"]
    parts = [f"[{t['name']}] {t.get('msg', '')}" for t in tasks if t.get("status") == "failed"]
    parts += [
        f"handler [{h['name']}] {h.get('msg', '')}"
        for h in res["handlers"]
        if h.get("status") == "failed"
    ]
    head = f"{len(res['failed_tasks'])} of {len(tasks)} tasks failed"
    return head + (": " + "; ".join(parts) if parts else f" (desync-decl exited {res['rc']})")
