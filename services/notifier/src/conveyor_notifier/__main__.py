import asyncio

from conveyor_notifier.app import run
from conveyor_notifier.settings import NotifierSettings
from conveyor_shared.logging import configure_logging


def main() -> None:
    settings = NotifierSettings()
    configure_logging(settings.log_level, settings.log_json)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
