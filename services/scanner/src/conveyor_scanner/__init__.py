"""scanner: turns arrivals in the pick-ups into recorded, dispatched jobs."""
