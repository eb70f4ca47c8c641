import asyncio

from conveyor_api.app import run
from conveyor_api.settings import ApiSettings
from conveyor_shared.logging import configure_logging


def main() -> None:
    settings = ApiSettings()
    configure_logging(settings.log_level, settings.log_json)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
