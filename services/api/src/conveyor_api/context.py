"""What every request handler needs, opened once per process in ``app.lifespan``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from conveyor_api.auth import KeyRing
from conveyor_api.settings import ApiSettings
from conveyor_shared.config.loader import RoutesSource
from conveyor_shared.ledger.files import FileLedger
from conveyor_shared.ledger.jobs import JobLedger
from conveyor_shared.ledger.received import ReceivedLedger
from conveyor_shared.messaging.publisher import EventPublisher
from conveyor_shared.runtime import AwsClients
from conveyor_shared.secrets import SecretStore
from conveyor_shared.settings import ResourceNames
from conveyor_shared.sync.remote import SourceOpener


@dataclass
class ApiContext:
    settings: ApiSettings
    aws: AwsClients
    files: FileLedger
    jobs: JobLedger
    routes: RoutesSource
    secrets: SecretStore
    keys: KeyRing
    publisher: EventPublisher
    #: Provider sync's record of every file received (S3).
    received: ReceivedLedger
    #: Reaches provider sources' servers, for checks, tests and plans.
    sources: SourceOpener

    @property
    def names(self) -> ResourceNames:
        return self.settings.names

    @property
    def db(self) -> Any:
        return self.aws.dynamodb


def api_context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.conveyor
    return context


Context = Annotated[ApiContext, Depends(api_context)]
