import asyncio

from conveyor_scanner.app import run
from conveyor_scanner.settings import ScannerSettings
from conveyor_shared.logging import configure_logging


def main() -> None:
    settings = ScannerSettings()
    configure_logging(settings.log_level, settings.log_json)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
