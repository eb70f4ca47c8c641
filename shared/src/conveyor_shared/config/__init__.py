"""The routes file: models, loader and validator."""

from conveyor_shared.config.loader import RoutesSource, load_routes, parse_routes_text
from conveyor_shared.config.models import (
    DESTINATION_TYPES,
    DestinationConfig,
    FtpDestination,
    GcsDestination,
    OpsNotifications,
    Route,
    RoutesFile,
    S3Destination,
    S3Location,
    SecretRef,
    SftpDestination,
)
from conveyor_shared.config.validate import ConfigError, Problem, validate_routes

__all__ = [
    "DESTINATION_TYPES",
    "ConfigError",
    "DestinationConfig",
    "FtpDestination",
    "GcsDestination",
    "OpsNotifications",
    "Problem",
    "Route",
    "RoutesFile",
    "RoutesSource",
    "S3Destination",
    "S3Location",
    "SecretRef",
    "SftpDestination",
    "load_routes",
    "parse_routes_text",
    "validate_routes",
]
