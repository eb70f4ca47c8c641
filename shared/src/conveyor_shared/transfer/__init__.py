"""Source/Destination protocols, features, and the one ``copy()``."""

from conveyor_shared.transfer.copy import CopyResult, copy
from conveyor_shared.transfer.protocols import (
    Destination,
    Features,
    HashVerifier,
    ObjectInfo,
    ServerSideCopier,
    Source,
    Upload,
)

__all__ = [
    "CopyResult",
    "Destination",
    "Features",
    "HashVerifier",
    "ObjectInfo",
    "ServerSideCopier",
    "Source",
    "Upload",
    "copy",
]
