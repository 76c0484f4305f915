"""Commands for: Smart dispatch: train, evaluate and predict the text classifier."""

from __future__ import annotations

import typer

dispatch_app = typer.Typer(help="Smart dispatch: train, evaluate and predict the text classifier.",
                           no_args_is_help=True)

# Sub-command groups this module adds to `zhizhi`, by name.
COMMANDS: dict[str, typer.Typer] = {"dispatch": dispatch_app}
