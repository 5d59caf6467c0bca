# Copyright: desync-decl contributors
# BSD 3-Clause License (see https://opensource.org/licenses/BSD-3-Clause)
"""The options and notes the apply and extract modules share (``runner.common_argument_spec``)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  verify:
    description:
      - Ignore the records that let a converged file be recognised without reading it, and
        read every target and store again (C(desync-decl apply --verify)); drift becomes an update.
    type: bool
    default: false
  state_dir:
    description:
      - Where desync-decl keeps its records of converged files and its locks
        (C(--state-dir)).
      - Default C($DESYNC_DECL_STATE_DIR) if set, else C(/var/lib/desync-decl) for root, for
        other users C($XDG_STATE_HOME/desync-decl).
    type: path
  env:
    description:
      - Environment variables for the run, for the manifest's C(${env:NAME}) references and
        the stores' credentials (C(S3_ACCESS_KEY), C(S3_SECRET_KEY), C(DESYNC_HTTP_AUTH), ...).
      - Its values are C(no_log) and travel inside the module's arguments. Prefer it to the
        task's C(environment) keyword for secrets, which Ansible puts on a command line that
        C(-vvv) shows.
    type: dict
    default: {}
  config:
    description:
      - desync's config file on the host (C(desync-decl --config)), with credentials and
        store options. Default C(~/.config/desync/config.json) of the user the module runs as.
    type: path
  lock_timeout:
    description:
      - Give up waiting for another run's lock on a file or store after this many seconds
        (C(--lock-timeout)). Default wait.
    type: float
  executable:
    description:
      - The C(desync-decl) command on the host. Default the first one on C(PATH).
      - The C(desync_decl.core.install) role installs it in a virtual environment and sets the
        fact C(desync_decl_executable) to its path.
    type: path
notes:
  - The module runs C(desync-decl apply --json) on the host (desync-decl 0.1 or later must be
    installed there; Python 3.11 or later for it); the module itself needs only Python's
    standard library.
  - Every value the manifest reads from C(${env:NAME}) is masked as C(no_log) in the result,
    besides desync-decl's own redaction (which shows the reference instead).
requirements:
  - desync-decl >= 0.1 on the managed host
"""
