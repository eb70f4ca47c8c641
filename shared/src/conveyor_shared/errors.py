"""One error hierarchy for all of Conveyor.

Backends translate their SDK's exceptions into these at their edge, so callers
never catch botocore, asyncssh or aiohttp exceptions. Whether an error is worth
retrying is a property of the error class, not of the caller's guesswork.
"""

from __future__ import annotations


class ConveyorError(Exception):
    """Base of every error Conveyor raises on purpose."""

    #: A retryable error may succeed if the same operation is tried again later.
    retryable: bool = False


class NotFound(ConveyorError):
    """The object, directory, entry or secret does not exist."""


class AlreadyExists(ConveyorError):
    """The target exists and the operation refuses to overwrite it."""


class TransientError(ConveyorError):
    """A network drop, throttling, a timeout, a 5xx: worth another try."""

    retryable = True


class PermanentError(ConveyorError):
    """Bad credentials, an unknown host key, permission denied: trying again won't help."""


class CredentialsRefused(PermanentError):
    """The server refused the login. Permanent, unless the secret was rotated
    since it was read: callers read the secret again once before giving up."""


class Misconfigured(PermanentError):
    """The configuration or a secret it references is wrong or incomplete."""


class IntegrityError(TransientError):
    """What arrived differs from what was sent (size or checksum mismatch).

    Retryable: a fresh copy usually fixes a corrupted transfer.
    """
