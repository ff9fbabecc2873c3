"""`python -m emulation.cli ...`, as the `edgestage` command."""

from emulation.cli import main

raise SystemExit(main())
