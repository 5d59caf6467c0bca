#!/usr/bin/python
# Copyright: desync-decl contributors
# BSD 3-Clause License (see https://opensource.org/licenses/BSD-3-Clause)
"""Make one file hold an index's content (a one-task desync-decl manifest)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: extract
short_description: Make one file hold the content of a desync/casync index
version_added: 0.1.0
description:
  - Makes O(dest) hold the content that the index O(index) describes, fetching from
    O(stores) only the chunks that neither the file's earlier content nor O(seeds) hold,
    and gives it O(mode), O(owner) and O(group). With O(state=absent) removes it.
  - It is the C(extract) task of a desync-decl manifest, run by C(desync-decl apply) on the
    host, with the same check and diff semantics as M(desync_decl.core.apply). Check mode
    reports C(changed) as the apply would and writes nothing; diff mode returns the file's
    before and after (content as the index digest it holds, size, mode, owner, group).
  - A converged file is recognised without being read (a record in O(state_dir)), and with
    O(pin) without the index being read either.
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
  dest:
    description:
      - The file to write (or remove), an absolute path on the host.
    type: path
    required: true
    aliases: [path]
  index:
    description:
      - Local path or URL of the index (C(.caibx)), as desync's C(extract) takes it.
      - Required unless O(state=absent).
    type: str
  stores:
    description:
      - Chunk stores to fetch from, tried in order, as desync's C(-s) takes them (a local
        directory, C(http(s\)://), C(s3+http(s\)://), C(gs://), C(sftp://), C(ssh://),
        C(oci+http(s\)://)).
      - Required unless O(state=absent).
    type: list
    elements: str
  store_options:
    description:
      - Options for every store in O(stores), as a manifest's store C(options) (C(timeout),
        C(retries), C(http_auth), C(ca_cert), ...). A secret in them belongs in O(env) and is
        named here as C(${env:NAME}), as in the examples.
    type: dict
  cache:
    description:
      - A local directory keeping the chunks fetched (read-through cache, desync's C(-c)),
        read before O(stores).
    type: path
  seeds:
    description:
      - Files sharing chunks with O(dest), read instead of fetching. Each is a path (its index
        is C(<path>.caibx)) or a mapping with C(file) and C(index).
      - The file's own earlier content is always used, without being listed here.
    type: list
    elements: raw
    default: []
  invalid_seeds:
    description:
      - What a seed that does not hold what its index says does. C(regenerate) chunks it
        again, C(skip) leaves it out, C(fail) fails the task.
    type: str
    choices: [regenerate, skip, fail]
    default: regenerate
  mode:
    description:
      - Permissions as a quoted octal string, such as C("0644").
    type: str
  owner:
    description:
      - Owning user, a name or a uid.
    type: str
  group:
    description:
      - Owning group, a name or a gid.
    type: str
  pin:
    description:
      - Refuse an index whose digest differs (C(sha512-256:<hex>), as C(desync-decl make)
        prints it). A converged file with this digest stays converged without the index being
        read.
    type: str
  in_place:
    description:
      - Rewrite the file in place instead of writing a new file and renaming it.
    type: bool
    default: false
  backup:
    description:
      - Keep the replaced file as C(<dest>.<timestamp>~).
    type: bool
    default: false
  state:
    description:
      - V(present) makes the file hold the index's content, V(absent) removes it and its record.
    type: str
    choices: [present, absent]
    default: present
seealso:
  - module: desync_decl.core.apply
"""

EXAMPLES = r"""
- name: Install the app image from S3, the previous image as a seed
  desync_decl.core.extract:
    index: s3+https://s3.example.com/artifacts/app-2024.06.caibx
    dest: /opt/app/app.img
    stores:
      - s3+https://s3.example.com/artifacts/store
    cache: /var/cache/desync-decl/chunks
    seeds:
      - /opt/app/app-2024.05.img
    mode: "0644"
    owner: app
    pin: "sha512-256:4e0a0b1f0c1d5e7a3b9b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9012"
    env:
      S3_ACCESS_KEY: "{{ vault_s3_access_key }}"
      S3_SECRET_KEY: "{{ vault_s3_secret_key }}"

- name: From a chunk-server that wants a token
  desync_decl.core.extract:
    index: https://mirror.example.com/index/firmware.caibx
    dest: /srv/firmware.bin
    stores: [https://mirror.example.com/store]
    store_options:
      http_auth: "Bearer ${env:MIRROR_TOKEN}"
    env:
      MIRROR_TOKEN: "{{ vault_mirror_token }}"

- name: Remove it
  desync_decl.core.extract:
    dest: /srv/firmware.bin
    state: absent
"""

RETURN = r"""
dest:
  description: The file.
  returned: always
  type: str
  sample: /opt/app/app.img
recap:
  description: The one task by outcome (C(ok), C(changed), C(failed), C(skipped)).
  returned: when desync-decl ran
  type: dict
  sample: {"ok": 0, "changed": 1, "failed": 0, "skipped": 0}
tasks:
  description:
    - The one task's result, as in M(desync_decl.core.apply) (C(status), C(msg), C(action),
      C(travel), C(stats), C(diff), C(warnings)); its name is O(dest).
  returned: when desync-decl ran
  type: list
  elements: dict
handlers:
  description: Always empty (the module notifies no desync-decl handler).
  returned: when desync-decl ran
  type: list
  elements: dict
bytes:
  description:
    - Bytes moved (in check mode, that would be), by source, as in M(desync_decl.core.apply)
      (C(total), C(fetched), C(stores) named C(store1), C(store2), ... in the order of
      O(stores), C(seeds), C(self), C(in_place), C(null)).
  returned: when desync-decl ran
  type: dict
  sample: {"total": 3000000, "fetched": 1249873, "seeds": 0, "self": 1750000,
           "in_place": 0, "null": 0, "uploaded": 0,
           "stores": {"store1": {"chunks": 19, "bytes": 1245184, "stored_bytes": 1249873,
                                 "remote": true}}}
failed_tasks:
  description: O(dest) if it failed.
  returned: when desync-decl ran
  type: list
  elements: str
failed_handlers:
  description: Always empty.
  returned: when desync-decl ran
  type: list
  elements: str
cmd:
  description: The command the module ran on the host (its manifest a temporary file).
  returned: when desync-decl ran
  type: list
  elements: str
rc:
  description: desync-decl's exit status.
  returned: always
  type: int
errors:
  description: Every problem of the options, as desync-decl found them.
  returned: when the options do not make a valid task
  type: list
  elements: str
  sample: ["'extract.mode' of task '/opt/app/app.img': expected an octal mode in quotes, ..."]
"""

import json

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.desync_decl.core.plugins.module_utils.runner import (
    Run,
    common_argument_spec,
)


def definition(p: dict) -> dict:
    """The manifest of one extract task with the module's options: stores named
    ``store1``, ``store2``, ... in order, each behind the cache when there is one."""
    names = [f"store{n}" for n in range(1, len(p["stores"] or ()) + 1)]
    stores: dict = {}
    for name, url in zip(names, p["stores"] or ()):
        stores[name] = dict(url=url, options=p["store_options"] or {})
    doc: dict = dict(version=1, stores=stores)
    if p["cache"]:
        stores["cache"] = dict(url=p["cache"])
        doc["caches"] = {"cached-" + name: dict(store=name, cache="cache") for name in names}
        names = ["cached-" + name for name in names]
    action: dict = dict(path=p["dest"])
    if p["state"] == "absent":
        action["state"] = "absent"
    else:
        action.update(index=p["index"], stores=names, invalid_seeds=p["invalid_seeds"])
        for key in ("seeds", "in_place", "backup"):
            if p[key]:
                action[key] = p[key]
        for key in ("mode", "owner", "group", "pin"):
            if p[key] is not None:
                action[key] = p[key]
    doc["tasks"] = [dict(name=p["dest"], extract=action)]
    return doc


def main() -> None:
    spec = common_argument_spec()
    spec.update(
        dest=dict(type="path", required=True, aliases=["path"]),
        index=dict(type="str"),
        stores=dict(type="list", elements="str"),
        store_options=dict(type="dict"),
        cache=dict(type="path"),
        seeds=dict(type="list", elements="raw", default=[]),
        invalid_seeds=dict(
            type="str", choices=["regenerate", "skip", "fail"], default="regenerate"
        ),
        mode=dict(type="str"),
        owner=dict(type="str"),
        group=dict(type="str"),
        pin=dict(type="str"),
        in_place=dict(type="bool", default=False),
        backup=dict(type="bool", default=False),
        state=dict(type="str", choices=["present", "absent"], default="present"),
    )
    module = AnsibleModule(
        argument_spec=spec,
        required_if=[("state", "present", ("index", "stores"))],
        supports_check_mode=True,
    )
    text = json.dumps(definition(module.params), indent=2)
    run = Run(module, text=text, label="")
    res = run.run(run.command())
    res["dest"] = module.params["dest"]
    run.finish(res)


if __name__ == "__main__":
    main()
