"""Commands for: City vital signs (体征指标): compute and export."""

from __future__ import annotations

import typer

indicators_app = typer.Typer(help="City vital signs (体征指标): compute and export.", no_args_is_help=True)

# Sub-command groups this module adds to `zhizhi`, by name.
COMMANDS: dict[str, typer.Typer] = {"indicators": indicators_app}
