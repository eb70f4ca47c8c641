"""Operator commands over the status and resend API (docs/api.md)."""

from conveyor_cli.commands.operate import register

__all__ = ["register"]
