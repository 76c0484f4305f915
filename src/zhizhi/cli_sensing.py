"""Commands for: Perception: devices, the MQTT consumer, the simulator."""

from __future__ import annotations

import typer

sensing_app = typer.Typer(help="Perception: devices, the MQTT consumer, the simulator.", no_args_is_help=True)

# Sub-command groups this module adds to `zhizhi`, by name.
COMMANDS: dict[str, typer.Typer] = {"sensing": sensing_app}
