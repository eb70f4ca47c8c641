"""Conveyor's status and resend API (A4, D5, S6)."""
