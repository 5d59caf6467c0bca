#!/usr/bin/python
# Copyright: desync-decl contributors
# BSD 3-Clause License (see https://opensource.org/licenses/BSD-3-Clause)
"""Converge the host to a desync-decl manifest (``desync-decl apply``)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: apply
short_description: Converge a host to a desync-decl manifest
version_added: 0.1.0
description:
  - Runs C(desync-decl apply) on the host for a manifest, a file on the host or given
    inline, and reports each of its tasks (extract, untar, make, tar, chop, cache, prune,
    verify) as desync-decl does, with the bytes that travelled from each source.
  - Converged files are recognised without being read, so a second run changes nothing and
    fetches nothing.
  - In check mode it runs C(desync-decl apply --check), the plan apply itself makes;
    C(changed) is what the apply would report, and nothing is written.
  - In diff mode each task that changes, or would, returns its target's before and after
    (content as the index digest it holds, size, mode, owner, group).
  - A manifest that does not load fails the task with every problem, each as C(FILE:LINE:COL)
    and its message (C(definition:LINE:COL) for an inline one).
author:
  - desync-decl contributors
extends_documentation_fragment:
  - desync_decl.core.common
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  manifest:
    description:
      - Path of the manifest on the host (YAML). Relative paths in it are relative to its
        directory.
      - Exactly one of O(manifest) and O(definition).
    type: path
  definition:
    description:
      - The manifest itself, as YAML text or as a mapping, for a manifest kept with the
        playbook (a template, a vars file).
      - It is written to a temporary file on the host, so its paths should be absolute.
      - Exactly one of O(manifest) and O(definition).
    type: raw
  tags:
    description:
      - Only the manifest's tasks with one of these tags (C(--tags)).
    type: list
    elements: str
    default: []
  skip_tags:
    description:
      - None of the manifest's tasks with one of these tags (C(--skip-tags)).
    type: list
    elements: str
    default: []
  jobs:
    description:
      - Tasks of the manifest run at once (C(--jobs)); tasks touching the same file or
        store wait for each other.
    type: int
    default: 1
seealso:
  - module: desync_decl.core.extract
"""

EXAMPLES = r"""
- name: Converge the app image to the manifest checked out on the host
  desync_decl.core.apply:
    manifest: /etc/desync-decl/fleet.yaml
    env:
      MIRROR_TOKEN: "{{ vault_mirror_token }}"

- name: An inline manifest, templated per host; only the tasks tagged app
  desync_decl.core.apply:
    definition: "{{ lookup('ansible.builtin.template', 'app.yaml.j2') }}"
    tags: [app]
    state_dir: /var/lib/desync-decl

- name: Roll out two hosts at a time, stopping at the first failure
  hosts: app_servers
  serial: 2
  max_fail_percentage: 0
  tasks:
    - name: App image
      desync_decl.core.apply:
        definition:
          version: 1
          stores:
            origin: {url: "s3+https://s3.example.com/artifacts/store"}
          tasks:
            - name: app image
              extract:
                index: "https://s3.example.com/artifacts/app-{{ app_version }}.caibx"
                path: /opt/app/app.img
                stores: [origin]
                mode: "0644"
        env:
          S3_ACCESS_KEY: "{{ vault_s3_access_key }}"
          S3_SECRET_KEY: "{{ vault_s3_secret_key }}"
      register: app

    - name: Say what travelled
      ansible.builtin.debug:
        msg: "{{ app.bytes.fetched }} bytes fetched, {{ app.recap.changed }} tasks changed"
"""

RETURN = r"""
recap:
  description: Tasks of the manifest by outcome, as desync-decl's RECAP line.
  returned: when desync-decl ran
  type: dict
  sample: {"ok": 1, "changed": 1, "failed": 0, "skipped": 0}
tasks:
  description:
    - Each task desync-decl ran (or, in check mode, planned), as its C(apply --json) reports it.
  returned: when desync-decl ran
  type: list
  elements: dict
  contains:
    name:
      description: The task's name in the manifest.
      type: str
      sample: install app image
    kind:
      description: The task's kind.
      type: str
      sample: extract
    status:
      description: C(ok), C(changed), C(failed) or C(skipped).
      type: str
      sample: changed
    msg:
      description: What happened, or why it failed (desync-decl's one line).
      type: str
      sample: "extracted: 1.2 MiB fetched, 0 B from seeds"
    action:
      description: The planned action, C(create), C(update), C(delete) or C(no-op).
      type: str
      sample: update
    target:
      description: What the task converges (a path, an index, a store).
      type: str
      sample: /opt/app/app.img
    travel:
      description:
        - What the task's plan moves, by source, as C(desync-decl plan --json) shows it
          (C(total), C(seeds), C(self), C(in-place), C(null), C(stores) with plain and stored
          bytes per store, C(upload), C(delete)).
      type: dict
    stats:
      description:
        - What the apply did (empty in check mode), e.g. C(bytes-from-store) and per store
          C(reads) as they happened.
      type: dict
    diff:
      description: The target's C(before) and C(after) (only with C(--diff)).
      type: dict
    warnings:
      description: Failover switches and cache repairs (also shown as Ansible warnings).
      type: list
      elements: str
    seconds:
      description: How long the task took.
      type: float
handlers:
  description: The manifest's handlers that ran (or would run, in check mode).
  returned: when desync-decl ran
  type: list
  elements: dict
bytes:
  description:
    - Bytes moved by the tasks that changed (in check mode, that would), by source, from the
      plan each followed.
  returned: when desync-decl ran
  type: dict
  contains:
    total:
      description: Bytes of the targets written.
      type: int
    fetched:
      description: Bytes read over the network (remote stores' chunks as they store them).
      type: int
      sample: 1249873
    stores:
      description:
        - Per store name, C(chunks), plain C(bytes), C(stored_bytes) (what reading them
          transfers) and whether it is C(remote).
      type: dict
      sample: {"origin": {"chunks": 19, "bytes": 1245184, "stored_bytes": 1249873, "remote": true}}
    seeds:
      description: Bytes taken from declared seeds.
      type: int
    self:
      description: Bytes taken from the target's earlier content.
      type: int
    in_place:
      description: Bytes already in place.
      type: int
    "null":
      description: Bytes of zero runs (holes).
      type: int
    uploaded:
      description: Bytes of chunks uploaded to stores (make, chop, cache tasks).
      type: int
failed_tasks:
  description: Names of the tasks that failed.
  returned: when desync-decl ran
  type: list
  elements: str
failed_handlers:
  description: Names of the handlers that failed.
  returned: when desync-decl ran
  type: list
  elements: str
cmd:
  description: The command the module ran on the host.
  returned: when desync-decl ran
  type: list
  elements: str
  sample: ["/opt/desync-decl/bin/desync-decl", "apply", "/etc/desync-decl/fleet.yaml", "--json"]
rc:
  description: desync-decl's exit status.
  returned: always
  type: int
errors:
  description: Every problem of a manifest that did not load, as C(FILE:LINE:COL) and a message.
  returned: when the manifest did not load
  type: list
  elements: str
  sample: ["/etc/desync-decl/fleet.yaml:9:16: unknown store, group or cache 'orign' ..."]
"""

import json

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.desync_decl.core.plugins.module_utils.runner import (
    Run,
    common_argument_spec,
)


def main() -> None:
    spec = common_argument_spec()
    spec.update(
        manifest=dict(type="path"),
        definition=dict(type="raw"),
        tags=dict(type="list", elements="str", default=[]),
        skip_tags=dict(type="list", elements="str", default=[]),
        jobs=dict(type="int", default=1),
    )
    module = AnsibleModule(
        argument_spec=spec,
        mutually_exclusive=[("manifest", "definition")],
        required_one_of=[("manifest", "definition")],
        supports_check_mode=True,
    )
    p = module.params
    if p["definition"] is None:
        run = Run(module, path=p["manifest"])
    else:
        definition = p["definition"]
        # JSON is YAML: a mapping is written one key a line, for useful LINE:COL
        text = definition if isinstance(definition, str) else json.dumps(definition, indent=2)
        run = Run(module, text=text, label="definition")
    cmd = run.command(tags=p["tags"], skip_tags=p["skip_tags"], jobs=p["jobs"])
    run.finish(run.run(cmd))


if __name__ == "__main__":
    main()
