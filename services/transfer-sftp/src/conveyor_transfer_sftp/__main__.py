import asyncio

from conveyor_shared.delivery.service import TransferSettings
from conveyor_shared.logging import configure_logging
from conveyor_transfer_sftp.app import run


def main() -> None:
    settings = TransferSettings()
    configure_logging(settings.log_level, settings.log_json)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
