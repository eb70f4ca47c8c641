from conveyor_shared.delivery.service import TransferSettings
from conveyor_shared.entry import service_main
from conveyor_transfer_ftp.app import run

main = service_main(TransferSettings, run)

if __name__ == "__main__":
    main()
