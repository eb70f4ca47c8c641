"""The embedded local stack: stand-ins for every external system, run as
plain processes on 127.0.0.1 (S5). Used by ``conveyor dev up`` and by the
integration tests' session fixtures alike."""
