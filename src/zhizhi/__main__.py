"""`python -m zhizhi` runs the CLI."""

from zhizhi.cli import app

app()
