"""`lantern moe ...`: fit a Mixture-of-Experts model to a small machine and to the user's notes."""

from __future__ import annotations

import click


@click.group()
def moe() -> None:
    """Routing report, expert pruning and dense -> MoE splitting."""


from app.cli.moe_split import split  # noqa: E402  (each command module adds itself here)

moe.add_command(split)
