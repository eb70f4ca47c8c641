from conveyor_scanner.app import run
from conveyor_scanner.settings import ScannerSettings
from conveyor_shared.entry import service_main

main = service_main(ScannerSettings, run)

if __name__ == "__main__":
    main()
