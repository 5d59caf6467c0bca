"""``python -m desync_decl`` runs the command-line interface."""

from desync_decl.cli.main import main

raise SystemExit(main())
