"""How the consumer's deletes and visibility changes are batched and retried
(messaging/acks.py), with a scripted SQS batch API: SQS itself (and moto)
cannot be made to fail one entry on its side. The batches against moto are
in tests/integration/test_consumer_batching.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError, EndpointConnectionError

from conveyor_shared.messaging.acks import EntryBatcher

Reply = Callable[[list[dict[str, Any]]], dict[str, Any]]


class ScriptedBatchApi:
    """Answers each batch call with the next scripted reply (the last repeats)."""

    def __init__(self, *replies: Reply | Exception) -> None:
        self.calls: list[list[str]] = []
        self._replies = list(replies)

    async def __call__(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append([e["ReceiptHandle"] for e in entries])
        reply = self._replies.pop(0) if len(self._replies) > 1 else self._replies[0]
        if isinstance(reply, Exception):
            raise reply
        return reply(entries)


def all_done(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Successful": [{"Id": e["Id"]} for e in entries], "Failed": []}


def failing(receipt: str, code: str, *, sender_fault: bool) -> Reply:
    def reply(entries: list[dict[str, Any]]) -> dict[str, Any]:
        bad = [e for e in entries if e["ReceiptHandle"] == receipt]
        good = [e for e in entries if e["ReceiptHandle"] != receipt]
        return {
            "Successful": [{"Id": e["Id"]} for e in good],
            "Failed": [{"Id": e["Id"], "Code": code, "SenderFault": sender_fault} for e in bad],
        }

    return reply


def refusal(code: str, status: int, operation: str) -> ClientError:
    response: Any = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, operation)


def batcher(api: ScriptedBatchApi, linger: float = 60.0) -> EntryBatcher:
    return EntryBatcher(api, "DeleteMessageBatch", linger=linger, attempts=4)


def receipt(name: str) -> dict[str, Any]:
    return {"ReceiptHandle": name}


async def test_ten_pending_entries_go_out_at_once_and_fewer_after_the_linger() -> None:
    api = ScriptedBatchApi(all_done)
    full = batcher(api, linger=60)
    outcomes = [full.submit(receipt(f"r{i}")) for i in range(10)]
    assert await asyncio.wait_for(asyncio.gather(*outcomes), 1) == [None] * 10
    assert api.calls == [[f"r{i}" for i in range(10)]]

    short = batcher(api, linger=0.05)
    few = [short.submit(receipt(f"s{i}")) for i in range(3)]
    assert await asyncio.wait_for(asyncio.gather(*few), 1) == [None] * 3
    assert api.calls[1:] == [["s0", "s1", "s2"]]


async def test_an_entry_sqs_failed_on_its_side_is_sent_again_alone() -> None:
    api = ScriptedBatchApi(failing("b", "InternalError", sender_fault=False), all_done)
    entries = batcher(api)
    outcomes = [entries.submit(receipt(r)) for r in "abc"]
    await entries.close()
    assert [o.result() for o in outcomes] == [None, None, None]
    assert api.calls == [["a", "b", "c"], ["b"]]


async def test_an_entry_sqs_refused_is_not_sent_again_and_says_why() -> None:
    api = ScriptedBatchApi(failing("b", "ReceiptHandleIsInvalid", sender_fault=True))
    entries = batcher(api)
    outcomes = [entries.submit(receipt(r)) for r in "ab"]
    await entries.close()
    assert [o.result() for o in outcomes] == [None, "ReceiptHandleIsInvalid"]
    assert api.calls == [["a", "b"]]


async def test_retries_stop_after_the_attempts_with_the_last_error() -> None:
    # The test session runs stamina in testing mode: three attempts, no waits.
    api = ScriptedBatchApi(failing("a", "ServiceUnavailable", sender_fault=False))
    entries = batcher(api)
    outcome = entries.submit(receipt("a"))
    await entries.close()
    assert outcome.result() == "ServiceUnavailable"
    assert api.calls == [["a"]] * 3


async def test_a_request_lost_in_transit_is_sent_again_and_a_refused_one_is_not() -> None:
    lost = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    api = ScriptedBatchApi(lost, all_done)
    entries = batcher(api)
    outcome = entries.submit(receipt("a"))
    await entries.close()
    assert (outcome.result(), len(api.calls)) == (None, 2)

    denied = refusal("AccessDenied", 403, "DeleteMessageBatch")
    refused = ScriptedBatchApi(denied)
    entries = batcher(refused)
    outcome = entries.submit(receipt("a"))
    await entries.close()
    assert (outcome.result(), refused.calls) == ("AccessDenied", [["a"]])


async def test_a_refused_request_sends_its_entries_alone_so_one_cannot_fail_the_rest() -> None:
    too_long = refusal("InvalidParameterValue", 400, "ChangeMessageVisibilityBatch")
    api = ScriptedBatchApi(too_long, all_done, too_long)
    entries = batcher(api)
    outcomes = [entries.submit(receipt(r)) for r in ("extension", "parked")]
    await entries.close()
    assert [o.result() for o in outcomes] == [None, "InvalidParameterValue"]
    assert api.calls == [["extension", "parked"], ["extension"], ["parked"]]


async def test_an_entry_nobody_waits_for_is_dropped_and_close_sends_the_rest() -> None:
    api = ScriptedBatchApi(all_done)
    entries = batcher(api, linger=60)
    unwanted = entries.submit(receipt("extension"))
    kept = entries.submit(receipt("back-off"))
    unwanted.cancel()
    await asyncio.wait_for(entries.close(), 1)
    assert kept.result() is None
    assert api.calls == [["back-off"]]
