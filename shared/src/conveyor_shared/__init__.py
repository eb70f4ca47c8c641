"""Conveyor's shared library: everything the services have in common.

Services import from here and never from each other.
"""
