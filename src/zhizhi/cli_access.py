"""Commands for: Accounts and roles."""

from __future__ import annotations

import typer

users_app = typer.Typer(help="Accounts and roles.", no_args_is_help=True)

# Sub-command groups this module adds to `zhizhi`, by name.
COMMANDS: dict[str, typer.Typer] = {"users": users_app}
