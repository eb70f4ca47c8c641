"""One file's story as a list of events, oldest first: each delivery attempt
(when, outcome, error, how the copy was checked) and each action someone took
on it (a resend or a download: who, when, why)."""

from __future__ import annotations

from dataclasses import dataclass

from conveyor_api.models import FileDetail

#: What each ``verifiedBy`` value means, in words (B1: nothing claims more).
VERIFICATION_TEXT = {
    "md5:destination": "MD5 of the bytes sent matched the checksum the destination computed",
    "sha256:stream": "SHA-256 of the bytes sent matched the file's own SHA-256",
    "size": "size only: the destination offers no checksum to compare",
}

_ACTION_TEXT = {
    "resend.file": "Resent",
    "resend.job": "Resent with its job",
    "resend.filter": "Resent by a filter",
    "redrive": "Sent back from the dead-letter queue",
    "download": "Downloaded",
}


@dataclass(frozen=True)
class Event:
    at: str
    title: str
    #: ``success``, ``fail``, ``failed`` (an attempt to be retried) or ``action``.
    kind: str
    detail: str | None = None
    by: str | None = None
    reason: str | None = None


def verification_text(verified_by: str | None) -> str:
    if verified_by is None:
        return "not verified yet"
    return VERIFICATION_TEXT.get(verified_by, verified_by)


def timeline(detail: FileDetail) -> list[Event]:
    events = [
        Event(
            at=attempt.at,
            title={"success": "Delivered", "fail": "Failed for good"}.get(
                attempt.outcome, "Attempt failed, will be tried again"
            ),
            kind=attempt.outcome,
            detail=attempt.error
            or (verification_text(attempt.verified_by) if attempt.verified_by else None),
        )
        for attempt in detail.attempts
    ]
    events += [
        Event(
            at=action.at,
            title=_ACTION_TEXT.get(action.kind, action.kind),
            kind="action",
            detail=action.outcome,
            by=action.by,
            reason=action.reason,
        )
        for action in detail.actions
    ]
    # ISO times in UTC sort as text; ties keep attempts before actions.
    return sorted(events, key=lambda e: e.at)
