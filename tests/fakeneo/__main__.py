"""`python -m tests.fakeneo`: serve the fake until SIGTERM (see `--help`)."""

from tests.fakeneo.cli import main

raise SystemExit(main())
