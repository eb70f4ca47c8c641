from conveyor_notifier.app import run
from conveyor_notifier.settings import NotifierSettings
from conveyor_shared.entry import service_main

main = service_main(NotifierSettings, run)

if __name__ == "__main__":
    main()
