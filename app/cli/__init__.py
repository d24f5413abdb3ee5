"""The `lantern` command line: one module per command group, thin over the core in `app`.

The only part of `app` that may import a front end (`tui`, `android_client_api`): it launches them.
Nothing outside it imports `app.cli`, except the `lantern` entry point (`app.cli:main`).
"""

from app.cli.main import main

__all__ = ["main"]
