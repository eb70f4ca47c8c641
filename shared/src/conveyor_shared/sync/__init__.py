"""What provider sync and the API share about provider sources: reaching a
source's server (``remote``), deciding what a poll would do (``detect``), the
commands on provider sync's queues (``messages``), and checking a source and
planning a poll (``check``)."""
