import asyncio

from conveyor_provider_sync.app import run
from conveyor_provider_sync.settings import ProviderSyncSettings
from conveyor_shared.logging import configure_logging


def main() -> None:
    settings = ProviderSyncSettings()
    configure_logging(settings.log_level, settings.log_json)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
