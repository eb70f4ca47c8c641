"""Source/Destination protocols, features, and the one ``copy()``."""

from conveyor_shared.transfer.copy import ChecksumRequired, CopyResult, copy
from conveyor_shared.transfer.protocols import (
    AssuredHashUnavailable,
    Destination,
    Features,
    ObjectInfo,
    ServerSideCopier,
    Source,
    Upload,
)

__all__ = [
    "AssuredHashUnavailable",
    "ChecksumRequired",
    "CopyResult",
    "Destination",
    "Features",
    "ObjectInfo",
    "ServerSideCopier",
    "Source",
    "Upload",
    "copy",
]
