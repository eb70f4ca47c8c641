"""conveyor_cli."""
