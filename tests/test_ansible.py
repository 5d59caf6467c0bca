"""Issue 16, item 1: the Ansible collection ``desync_decl.core`` (``ansible/``), built with
``ansible-galaxy collection build``, installed with ``ansible-galaxy collection install``
and run by real ``ansible-playbook`` against eight hosts.

Six hosts are ``ansible_connection=local``, two are reached over SSH through the suite's
private sshd (``tests/servers_ssh.py``); each has its own root and state folder. Half
fetch from moto's S3, half from our chunk-server (which wants a bearer token). The SSH
hosts get desync-decl from the collection's ``install`` role: a wheel of this tree
pushed and pip-installed in a virtual environment; the local hosts run this tree's
``python -m desync_decl``.

One playbook, four runs (each checks several points at once, to keep this under a
minute): v1 everywhere; v1 again (nothing changes, nothing is fetched: moto then
refuses every request and the chunk-server logs none); ``--check --diff`` for v2
(every host would change, the diff shows, nothing is written; a broken manifest fails
with FILE:LINE:COL; a secret is masked); then the v2 rollout with ``serial: 2`` and
``max_fail_percentage: 0`` where one host of the second batch has a dead store.
Ansible's own configuration, temp and control folders are in the test's temp dirs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import shutil
import stat
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from desync_decl import __version__
from tests import servers_http, servers_ssh
from tests.conftest import ROOT
from tests.servers_ssh import SshServer

if TYPE_CHECKING:  # imported by pytest as a plugin (pytest_plugins), not here first
    from tests.servers_cloud import S3Server

pytest_plugins = ["tests.servers_cloud"]
ssh_server = servers_ssh.ssh_server  # the fixtures
cli_server = servers_http.cli_server

COLLECTION = ROOT / "ansible"
TOKEN = "mirror-token-5f1c9e07d2"  # the chunk-server's bearer token
S3_KEYS = {"S3_ACCESS_KEY": "fleet-access-8b3d1", "S3_SECRET_KEY": "fleet-secret-4e7a92c6"}
PROBE_SECRET = "probe-secret-a93f2c51"  # read by a manifest from the inherited environment
SECRETS = (TOKEN, S3_KEYS["S3_SECRET_KEY"], PROBE_SECRET)
IMAGE_SIZE = 1 << 20
LOCAL_HOSTS = ("h1", "h2", "h3", "h4", "h5", "h6")
SSH_HOSTS = ("s1", "s2")
RECAP = re.compile(
    r"^(?P<host>\S+)\s+: ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(\d+)\s+"
    r"failed=(?P<failed>\d+)\s+skipped=(\d+)\s+rescued=(\d+)\s+ignored=(?P<ignored>\d+)",
    re.MULTILINE,
)
RESULTS = re.compile(r"^ok: \[(?P<host>\S+)\] => (?P<json>\{\n.*?\n\})$", re.MULTILINE | re.DOTALL)
FATAL = re.compile(r"^fatal: \[(?P<host>\S+)\]: FAILED! => (?P<json>\{.*?\})$", re.MULTILINE)
SANITY_OFFLINE = (  # ansible-test sanity tests that need no requirements installed from the net
    "action-plugin-docs",
    "compile",
    "empty-init",
    "ignores",
    "line-endings",
    "no-assert",
    "no-get-exception",
    "no-illegal-filenames",
    "no-smart-quotes",
    "replace-urlopen",
    "shebang",
    "symlinks",
    "use-argspec-type-path",
    "use-compat-six",
)


def tool(name: str) -> str:
    path = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), *_path()]))
    if path is None:
        pytest.skip(reason=f"{name} is missing (pip install 'ansible-core>=2.16,<2.19')")
    return path


def _path() -> list[str]:
    return os.environ.get("PATH", "").split(os.pathsep)


@dataclass
class Done:
    code: int
    out: str
    err: str

    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP's counts per host."""
        return {
            m["host"]: {k: int(m[k]) for k in ("ok", "changed", "failed", "ignored")}
            for m in RECAP.finditer(self.out)
        }


class Ansible:
    """The installed collection and an environment that keeps Ansible in temp dirs."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.collections = tmp / "collections"
        self.config = tmp / "ansible.cfg"
        self.config.write_text(
            textwrap.dedent(
                f"""\
                [defaults]
                collections_path = {self.collections}
                local_tmp = {tmp / "local-tmp"}
                remote_tmp = {tmp / "remote-tmp"}
                interpreter_python = {sys.executable}
                forks = 8
                retry_files_enabled = False
                nocows = True

                [connection]
                pipelining = True

                [ssh_connection]
                ssh_args = -o ControlMaster=no -o ControlPersist=no
                control_path_dir = {tmp / "cp"}
                """
            )
        )
        self.env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(self.config),
            "ANSIBLE_HOME": str(tmp / "ansible-home"),
            "ANSIBLE_COLLECTIONS_PATH": str(self.collections),
            "ANSIBLE_LOCAL_TEMP": str(tmp / "local-tmp"),
            "ANSIBLE_REMOTE_TEMP": str(tmp / "remote-tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "PROBE_SECRET": PROBE_SECRET,
        }
        self.env.pop("ANSIBLE_LOG_PATH", None)

    def run(self, *argv: object, cwd: Path | None = None, timeout: float = 120) -> Done:
        done = subprocess.run(
            [tool(str(argv[0])), *map(str, argv[1:])],
            cwd=cwd or self.tmp,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Done(done.returncode, done.stdout, done.stderr)

    @property
    def installed(self) -> Path:
        return self.collections / "ansible_collections" / "desync_decl" / "core"


@pytest.fixture(scope="module")
def ansible(tmp_path_factory) -> Ansible:
    """The collection as a user gets it: built into a tarball, installed from it."""
    a = Ansible(tmp_path_factory.mktemp("ansible"))
    built = a.run("ansible-galaxy", "collection", "build", COLLECTION, "--output-path", a.tmp)
    assert built.code == 0, built.out + built.err
    (tarball,) = a.tmp.glob("desync_decl-core-*.tar.gz")
    installed = a.run("ansible-galaxy", "collection", "install", tarball, "-p", a.collections)
    assert installed.code == 0, installed.out + installed.err
    assert (a.installed / "plugins" / "modules" / "apply.py").is_file()
    return a


# --- the fleet -------------------------------------------------------------------------


def versions(seed: int, size: int) -> tuple[bytes, bytes]:
    """v1, and v2: two regions rewritten and a few bytes inserted."""
    rng = random.Random(seed)
    v1 = rng.randbytes(size)
    v2 = bytearray(v1)
    v2[size // 5 : size // 5 + 40_000] = rng.randbytes(40_000)
    v2[size // 2 : size // 2] = rng.randbytes(3_000)
    return v1, bytes(v2)


def package_wheel(out: Path) -> Path:
    """desync_decl as this tree holds it (its C extensions built in place), as a wheel:
    what the install role pushes. Made here by zipping the package: building one with
    pip would write into the tree and may need the network for its build backend. Its
    local version label keeps the desync-decl installed for the suite (a version pip
    would take as the same) from satisfying the role's pip in place of the wheel."""
    version = f"{__version__}+fleet.test"
    info = f"desync_decl-{version}.dist-info"
    files: dict[str, bytes] = {}
    for path in sorted((ROOT / "desync_decl").rglob("*")):
        if (
            path.is_file()
            and "__pycache__" not in path.parts
            and path.suffix
            in (
                ".py",
                ".so",
                ".json",
            )
        ):
            files[path.relative_to(ROOT).as_posix()] = path.read_bytes()
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: desync-decl\nVersion: {version}\n".encode()
    )
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: tests/test_ansible.py\n"
        b"Root-Is-Purelib: false\nTag: py3-none-any\n"
    )
    files[f"{info}/entry_points.txt"] = (
        b"[console_scripts]\ndesync-decl = desync_decl.cli.main:main\n"
    )
    record = ""
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += f"{name},sha256={digest},{len(data)}\n"
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    wheel = out / f"desync_decl-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return wheel


PLAYBOOK = """\
- name: desync-decl on the SSH hosts, from a wheel
  hosts: ssh
  gather_facts: false
  roles:
    - role: desync_decl.core.install

- name: Roll out
  hosts: fleet
  gather_facts: false
  serial: "{{ batch | default(8) }}"
  max_fail_percentage: 0
  module_defaults:
    group/desync_decl.core.all:
      executable: "{{ desync_decl_executable }}"
      state_dir: "{{ root }}/state"
      config: "{{ root }}/desync.json"
      env: "{{ secrets }}"
      verify: "{{ verify | default(false) | bool }}"
  tasks:
    - name: App image
      desync_decl.core.apply:
        definition: "{{ lookup('ansible.builtin.template', 'image.yaml.j2') }}"
        tags: [app]
        skip_tags: [debug]
      register: image

    - name: Motd
      desync_decl.core.extract:
        index: "{{ indexes }}/motd-v{{ version }}.caibx"
        dest: "{{ root }}/etc/motd"
        stores: ["{{ store_url }}"]
        store_options: "{{ store_options }}"
        mode: "0644"
      register: motd

    - name: A manifest with mistakes
      desync_decl.core.apply:
        manifest: "{{ root }}/broken.yaml"
      register: broken
      ignore_errors: true
      when: probes | default(false) | bool and inventory_hostname == 'h1'

    - name: A desync-decl that prints a secret the manifest reads
      desync_decl.core.apply:
        definition:
          version: 1
          stores: {s: {url: "{{ store_url }}", options: {http_auth: "${env:PROBE_SECRET}"}}}
          tasks: []
        executable: "{{ leaky }}"
      register: leaked
      ignore_errors: true
      when: probes | default(false) | bool and inventory_hostname == 'h2'

    - name: The results, for the test
      ansible.builtin.debug:
        msg: >-
          RESULTS {{ {'image': image, 'motd': motd, 'broken': broken, 'leaked': leaked}
                     | to_json }}
"""

IMAGE_TEMPLATE = """\
version: 1
stores:
  upstream:
    url: "{{ store_url }}"
    options: {{ store_options | to_json }}
tasks:
  - name: app image
    tags: [app]
    extract:
      index: "{{ indexes }}/image-v{{ version }}.caibx"
      path: "{{ root }}/opt/app.img"
      stores: [upstream]
      mode: "0644"
  - name: debug image, left out by skip_tags
    tags: [app, debug]
    extract:
      index: /nowhere/debug.caibx
      path: "{{ root }}/opt/debug.img"
      stores: [upstream]
  - name: another app, left out by tags
    tags: [other]
    extract:
      index: /nowhere/other.caibx
      path: "{{ root }}/opt/other.img"
      stores: [upstream]
"""

BROKEN = """\
version: 1
stores:
  upstream: {url: /nowhere}
tasks:
  - name: app image
    extract:
      index: /nowhere/app.caibx
      path: /nowhere/app.img
      stores: [upstrem]
      mode: "0999"
"""


class Site:
    """The servers, the published versions and the hosts' folders."""

    def __init__(self, tmp: Path, ansible: Ansible, s3: S3Server, bucket: str, cli, start):  # type: ignore[no-untyped-def]
        self.tmp, self.ansible, self.s3 = tmp, ansible, s3
        self.images = versions(16, IMAGE_SIZE)
        self.motds = versions(61, 200_000)
        self.indexes = tmp / "indexes"
        self.indexes.mkdir()
        self.mirror_store = tmp / "mirror-store"
        self.origin_url = f"s3+{s3.endpoint}/{bucket}/store"
        self.digests: dict[str, str] = {}
        for name, blobs in (("image", self.images), ("motd", self.motds)):
            for n, blob in enumerate(blobs, 1):
                self.publish(cli, f"{name}-v{n}", blob)
        self.log = tmp / "chunk-server.log"
        self.mirror = start(
            "chunk-server",
            "-s",
            self.mirror_store,
            "--log",
            self.log,
            env={"DESYNC_HTTP_AUTH": f"Bearer {TOKEN}"},
        )
        dead = start("chunk-server", "-s", self.mirror_store)
        dead.stop()  # its port refuses connections now
        self.dead_url = dead.url
        self.hosts = {name: tmp / "hosts" / name for name in (*LOCAL_HOSTS, *SSH_HOSTS)}
        for root in self.hosts.values():
            root.mkdir(parents=True)
            (root / "desync.json").write_text("{}\n")  # not the machine's desync config
        (self.hosts["h1"] / "broken.yaml").write_text(BROKEN)
        self.local_desync = tmp / "desync-decl"
        self.local_desync.write_text(
            f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m desync_decl "$@"\n'
        )
        # a stand-in that prints a secret the manifest reads (as a server's error quoting
        # a header could): the module must have Ansible mask it, whatever printed it
        self.leaky = tmp / "leaky-desync-decl"
        self.leaky.write_text(
            '#!/bin/sh\necho "desync-decl: error: the store said: bad token $PROBE_SECRET" >&2\n'
            "exit 1\n"
        )
        for script in (self.local_desync, self.leaky):
            script.chmod(0o755)
        self.playbook = tmp / "site.yml"
        self.playbook.write_text(PLAYBOOK)
        (tmp / "templates").mkdir()
        (tmp / "templates" / "image.yaml.j2").write_text(IMAGE_TEMPLATE)
        self.wheel = package_wheel(tmp)

    def publish(self, cli, name: str, blob: bytes) -> None:  # type: ignore[no-untyped-def]
        """The index, and the chunks in the S3 origin and in the mirror's store."""
        source = self.tmp / f"{name}.bin"
        source.write_bytes(blob)
        digests = set()
        for store in (self.origin_url, self.mirror_store):
            made = cli("make", "-s", store, self.indexes / f"{name}.caibx", source)
            assert made.code == 0, made.err
            digests.add(made.out.split()[-1])
        (self.digests[name],) = digests

    def store_of(self, host: str) -> str:
        """Alternate hosts fetch from the origin (S3) and from the mirror (chunk-server)."""
        return "origin" if (sorted(self.hosts).index(host) % 2 == 0) else "mirror"

    def inventory(self, ssh: SshServer, dead: str | None = None) -> Path:
        """The fleet (local hosts, and the group ``ssh``); ``dead``'s store is the
        stopped chunk-server."""
        host_vars: dict[str, dict[str, object]] = {}
        for host, root in self.hosts.items():
            kind = self.store_of(host)
            options: dict[str, object] = {"retries": 0, "timeout": "5s"}
            if kind == "mirror":
                options["http_auth"] = "Bearer ${env:MIRROR_TOKEN}"
            url = self.origin_url if kind == "origin" else self.mirror.url
            host_vars[host] = {
                "root": str(root),
                "store_url": self.dead_url if host == dead else url,
                "store_options": options,
            }
            if host in SSH_HOSTS:
                host_vars[host] |= {"ansible_host": "127.0.0.1", "desync_decl_venv": f"{root}/venv"}
            else:
                host_vars[host] |= {
                    "ansible_connection": "local",
                    "desync_decl_executable": str(self.local_desync),
                }
        ssh_vars = {
            "ansible_connection": "ssh",
            "ansible_ssh_common_args": f"-F {ssh.ssh_config}",
            "desync_decl_wheel": str(self.wheel),
            "desync_decl_python": sys.executable,
            "desync_decl_system_site_packages": True,
            "desync_decl_pip_env": {"PIP_NO_INDEX": "1", "PIP_NO_DEPS": "1"},
            "desync_decl_link": "",
        }
        fleet = {
            "hosts": {h: host_vars[h] for h in LOCAL_HOSTS},
            "children": {"ssh": {"hosts": {h: host_vars[h] for h in SSH_HOSTS}, "vars": ssh_vars}},
        }
        group_vars = {
            "indexes": str(self.indexes),
            "leaky": str(self.leaky),
            "secrets": {"MIRROR_TOKEN": TOKEN, **S3_KEYS},
        }
        path = self.tmp / "inventory.yml"
        inventory = {"all": {"vars": group_vars, "children": {"fleet": fleet}}}
        path.write_text(json.dumps(inventory, indent=2) + "\n")
        return path

    def play(self, ssh: SshServer, version: int, *extra: object, dead: str | None = None):  # type: ignore[no-untyped-def]
        """``ansible-playbook`` of the site; each host's results, as its last task printed them."""
        done = self.ansible.run(
            "ansible-playbook",
            "-i",
            self.inventory(ssh, dead),
            self.playbook,
            "-e",
            f"version={version}",
            *extra,
        )
        kept = {}
        for m in RESULTS.finditer(done.out):
            kept[m["host"]] = json.loads(json.loads(m["json"])["msg"].removeprefix("RESULTS "))
        for secret in SECRETS:  # whatever the modules returned, Ansible printed or kept
            assert secret not in done.out + done.err, secret
        return done, kept

    def served(self) -> int:
        """Requests the chunk-server answered so far (one log line each)."""
        return len(self.log.read_text().splitlines()) if self.log.exists() else 0

    def snapshot(self) -> dict[str, tuple[int, int, int, str]]:
        """Every file under the hosts' roots (inode, mtime, mode, content) but the venvs
        and desync-decl's lock files (each run takes its locks, ``--check`` too)."""
        out = {}
        for root in self.hosts.values():
            for path in sorted(root.rglob("*")):
                where = path.relative_to(root).parts
                if where[0] == "venv" or where[:2] == ("state", "locks") or not path.is_file():
                    continue
                st = path.lstat()
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                out[str(path)] = (st.st_ino, st.st_mtime_ns, st.st_mode, digest)
        return out

    def holds(self, host: str, version: int) -> bool:
        root = self.hosts[host]
        image, motd = root / "opt" / "app.img", root / "etc" / "motd"
        return (
            image.read_bytes() == self.images[version - 1]
            and motd.read_bytes() == self.motds[version - 1]
            and stat.S_IMODE(image.stat().st_mode) == 0o644
        )


def changes(before: dict[str, object], after: dict[str, object]) -> list[str]:
    """Paths added, removed or changed (inode, mtime, mode or content)."""
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


@pytest.fixture
def site(tmp_path, ansible, moto_server, s3_bucket, cli, cli_server) -> Iterator[Site]:
    yield Site(tmp_path, ansible, moto_server, s3_bucket, cli, cli_server)


@pytest.mark.timeout(300)  # four ansible-playbook runs: about 12 s of CPU each
def test_a_fleet_of_eight_rolls_out_checks_and_stops_at_a_failing_batch(site, ssh_server):
    hosts = list(site.hosts)

    # v1: every host changes; the SSH hosts run the desync-decl the role installed
    done, kept = site.play(ssh_server, 1, "-v")
    assert done.code == 0, done.out + done.err
    recap = done.recap()
    assert set(recap) == set(hosts)
    assert all(recap[h]["changed"] >= 2 and recap[h]["failed"] == 0 for h in hosts), recap
    assert all(site.holds(h, 1) for h in hosts)
    for host in hosts:
        image, motd = kept[host]["image"], kept[host]["motd"]
        assert image["changed"] and motd["changed"]
        assert image["recap"] == {"ok": 0, "changed": 1, "failed": 0, "skipped": 0}
        assert [t["name"] for t in image["tasks"]] == ["app image"]  # tags, skip_tags
        assert image["tasks"][0]["action"] == "create"
        assert image["bytes"]["stores"]["upstream"]["bytes"] == IMAGE_SIZE
        assert image["bytes"]["fetched"] > 0 and motd["bytes"]["fetched"] > 0
    for host in SSH_HOSTS:
        assert kept[host]["image"]["cmd"][0] == f"{site.hosts[host]}/venv/bin/desync-decl"
    assert site.served() > 0

    # v1 again: nothing changes, on any host, and nothing is fetched: the chunk-server
    # serves no request, and moto refuses any (signatures are checked, against no user)
    before = site.snapshot()
    served = site.served()
    site.s3.require_auth()
    try:
        done, kept = site.play(ssh_server, 1, "-v")
    finally:
        site.s3.allow_anyone()
    assert done.code == 0, done.out + done.err
    recap = done.recap()
    assert all(recap[h]["changed"] == 0 for h in hosts), recap
    for host in hosts:
        for task in ("image", "motd"):
            result = kept[host][task]
            assert not result["changed"] and result["recap"]["ok"] == 1
            assert result["bytes"]["fetched"] == 0 and result["bytes"]["stores"] == {}
    assert site.served() == served
    assert changes(before, site.snapshot()) == []

    # a byte of h1's image changed behind its record (size and mtime kept): the record
    # is trusted, unless `verify: true` has the file read again, which repairs it
    image = site.hosts["h1"] / "opt" / "app.img"
    st = image.stat()
    with open(image, "r+b") as f:
        f.seek(IMAGE_SIZE // 2)
        f.write(bytes([f.read(1)[0] ^ 1]))
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    done, kept = site.play(ssh_server, 1, "--limit", "h1")
    assert done.code == 0 and not kept["h1"]["image"]["changed"], done.out + done.err
    done, kept = site.play(ssh_server, 1, "--limit", "h1", "-e", "verify=true")
    assert done.code == 0 and kept["h1"]["image"]["changed"], done.out + done.err
    assert kept["h1"]["image"]["tasks"][0]["action"] == "update"
    assert not kept["h1"]["motd"]["changed"]  # read again too, and found whole
    assert site.holds("h1", 1)
    before = site.snapshot()

    # --check --diff for v2: every host would change both files; nothing is written
    done, check = site.play(ssh_server, 2, "--check", "--diff", "-e", "probes=true")
    assert done.code == 0, done.out + done.err
    recap = done.recap()
    assert all(recap[h]["changed"] == 2 for h in hosts), recap
    assert changes(before, site.snapshot()) == []
    v1, v2 = site.digests["image-v1"], site.digests["image-v2"]
    for host in hosts:
        image = check[host]["image"]
        assert image["changed"] and image["tasks"][0]["action"] == "update"
        # the file is the seed of its next version: most of v2 comes from it
        assert 0 < image["bytes"]["fetched"] < image["bytes"]["seeds"]
        target = site.hosts[host] / "opt" / "app.img"
        block = (
            f"--- before: {target} (app image)\n+++ after: {target} (app image)\n"
            f"@@ -1,5 +1,5 @@\n-content: index {v1}\n-size: {IMAGE_SIZE}\n"
            f"+content: index {v2}\n+size: {len(site.images[1])}\n mode: 0644\n"
        )
        assert block in done.out, done.out
    # a manifest with mistakes fails the task with every one as FILE:LINE:COL
    broken = check["h1"]["broken"]
    path = site.hosts["h1"] / "broken.yaml"
    assert broken["failed"] and broken["errors"] == [
        f"{path}:9:16: unknown store, group or cache 'upstrem' in 'extract.stores[0]'"
        " of task 'app image' (known: stores upstream)",
        f"{path}:10:13: 'extract.mode' of task 'app image': expected an octal mode in"
        " quotes, such as \"0644\", got '0999'",
    ]
    assert broken["msg"] == "; ".join(broken["errors"])
    # a value the manifest reads from ${env:…} is masked, whatever prints it
    assert check["h2"]["leaked"]["msg"] == "the store said: bad token ********"

    # the v2 rollout, two hosts at a time; h4's store is a stopped server
    served = site.served()
    done, kept = site.play(ssh_server, 2, "-e", "batch=2", dead="h4")
    assert done.code != 0
    recap = done.recap()
    assert recap["h4"]["failed"] == 1 and recap["h3"]["failed"] == 0, recap
    rollout = done.out.split("PLAY [Roll out]", 1)[1].split("PLAY RECAP")[0]
    assert sorted(set(re.findall(r"\[([hs]\d)\b", rollout))) == ["h1", "h2", "h3", "h4"], rollout
    assert all(site.holds(h, 2) for h in ("h1", "h2"))
    assert (site.hosts["h3"] / "opt" / "app.img").read_bytes() == site.images[1]
    # the failing host and the later batches: not a file written
    untouched = [site.hosts[h] for h in ("h4", "h5", "h6", *SSH_HOSTS)]
    changed = changes(before, site.snapshot())
    assert [p for p in changed if any(Path(p).is_relative_to(r) for r in untouched)] == []
    (failed,) = [json.loads(m["json"]) for m in FATAL.finditer(done.out) if m["host"] == "h4"]
    assert failed["failed_tasks"] == ["app image"]
    assert failed["msg"].startswith("1 of 1 tasks failed: [app image] ")
    assert site.dead_url.removeprefix("http://").rstrip("/") in failed["msg"]
    # check mode said what the apply did: changed, action and bytes from the store
    for host in ("h1", "h2"):
        planned, applied = check[host]["image"], kept[host]["image"]
        assert applied["changed"] and applied["tasks"][0]["action"] == "update"
        stats = applied["tasks"][0]["stats"]
        assert stats["bytes-from-store"] == planned["bytes"]["stores"]["upstream"]["bytes"]
        assert applied["bytes"] == planned["bytes"]
    assert site.served() > served


def options(doc: str) -> set[str]:
    """The option names in ansible-doc's OPTIONS section (``- name`` or, required, ``= name``)."""
    section = doc.split("indicates it is required):", 1)[1].split("\nATTRIBUTES:", 1)[0]
    return set(re.findall(r"^[-=] (\w+)", section, re.MULTILINE))


def test_ansible_doc_renders_both_modules_and_the_role(ansible):
    done = ansible.run("ansible-doc", "desync_decl.core.apply", "desync_decl.core.extract")
    assert done.code == 0 and done.err == "", done.err
    apply_doc, extract_doc = done.out.split("> MODULE desync_decl.core.extract")
    common = {"verify", "state_dir", "env", "config", "lock_timeout", "executable"}
    assert options(apply_doc) == {
        *common,
        *("manifest", "definition", "tags", "skip_tags", "jobs"),
    }
    assert options(extract_doc) == {
        *common,
        *("index", "dest", "stores", "store_options", "cache", "seeds", "invalid_seeds"),
        *("mode", "owner", "group", "pin", "in_place", "backup", "state"),
    }
    assert "= dest " in extract_doc  # required
    for doc in (apply_doc, extract_doc):
        for section in ("EXAMPLES:", "RETURN VALUES:", "check_mode:", "diff_mode:"):
            assert section in doc, section
        assert re.search(r"^- (recap|tasks|bytes) ", doc.split("RETURN VALUES:")[1], re.M)
    role = ansible.run("ansible-doc", "-t", "role", "desync_decl.core.install")
    assert role.code == 0, role.out + role.err
    assert {"desync_decl_wheel", "desync_decl_venv", "desync_decl_package"} <= options(role.out)
    listed = ansible.run("ansible-doc", "-l", "desync_decl.core")
    assert listed.code == 0, listed.err
    assert [line.split()[0] for line in listed.out.splitlines() if line.strip()] == [
        "desync_decl.core.apply",
        "desync_decl.core.extract",
    ]


def test_ansible_test_sanity_passes_offline(ansible):
    """The sanity tests that run without installing requirements from the network (the
    others, validate-modules, pylint, yamllint, import, ..., download them)."""
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    tests = [arg for name in SANITY_OFFLINE for arg in ("--test", name)]
    done = ansible.run(
        "ansible-test",
        "sanity",
        "--python",
        python,
        "--python-interpreter",
        sys.executable,
        *tests,
        cwd=ansible.installed,
    )
    assert done.code == 0, done.out + done.err
    ran = re.findall(r'^Running sanity test "([^"]+)"', done.out, re.MULTILINE)
    assert sorted(ran) == sorted(SANITY_OFFLINE), done.out
