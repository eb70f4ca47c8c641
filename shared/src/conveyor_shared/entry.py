"""What every service's ``python -m`` does: read its settings from the
environment, configure logging, run until stopped (SIGTERM or SIGINT)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from conveyor_shared.logging import configure_logging
from conveyor_shared.settings import ConveyorSettings

S = TypeVar("S", bound=ConveyorSettings)


def service_main(
    settings_type: type[S], run: Callable[[S], Coroutine[Any, Any, None]]
) -> Callable[[], None]:
    """The service's entry point (its ``[project.scripts]`` ``main``).
    Settings are read when it is called, never at import."""

    def main() -> None:
        settings = settings_type()
        configure_logging(settings.log_level, settings.log_json)
        asyncio.run(run(settings))

    return main
