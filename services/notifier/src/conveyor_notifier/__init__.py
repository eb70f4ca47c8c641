"""conveyor_notifier."""
