"""docs/operations.md's ledger restore works: its commands, exactly as shown,
run against a deployed stack in moto and bring the files table back with
every entry, protected and recoverable again.

The AWS CLI is not one of the project's dependencies (its botocore pin fights
aioboto3's), so each ``aws <service> <command> --option value`` line is run
through boto3 as the CLI would: the command's operation, its options as the
operation's parameters (``--no-x`` is false, ``A=b`` shorthand a structure),
``--query`` with JMESPath, ``wait`` with the service's waiter, and
``NAME=$(...)`` and ``"$NAME"`` as the shell would.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import boto3
import jmespath  # type: ignore[import-untyped]

from tests.support import Stack

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def _section_commands(heading: str) -> list[str]:
    text = DOC.read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def _pascal(option: str) -> str:
    return "".join(part.capitalize() for part in option.split("-"))


def _value(text: str) -> Any:
    if "=" in text and not text.startswith(("arn:", "s3:")):
        return {k: _value(v) for k, v in (pair.split("=", 1) for pair in text.split(","))}
    return {"true": True, "false": False}.get(text, text)


def _parameters(words: list[str]) -> tuple[dict[str, Any], str | None]:
    parameters: dict[str, Any] = {}
    query = None
    index = 0
    while index < len(words):
        option = words[index].removeprefix("--")
        following = words[index + 1] if index + 1 < len(words) else None
        if option in {"query", "output"}:
            query = following if option == "query" else query
            index += 2
        elif following is None or following.startswith("--"):
            negated = option.startswith("no-")
            parameters[_pascal(option.removeprefix("no-"))] = not negated
            index += 1
        else:
            parameters[_pascal(option)] = _value(following)
            index += 2
    return parameters, query


def run(line: str, session: boto3.Session, variables: dict[str, str]) -> None:
    target = None
    assignment = re.fullmatch(r"(\w+)=\$\((.*)\)", line)
    if assignment:
        target, line = assignment.groups()
    expanded = re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], line)
    program, service, command, *rest = shlex.split(expanded)
    assert program == "aws"
    client = session.client({"s3api": "s3"}.get(service, service))
    if command == "wait":
        parameters, _ = _parameters(rest[1:])
        client.get_waiter(rest[0].replace("-", "_")).wait(
            **parameters, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
        )
        return
    parameters, query = _parameters(rest)
    response = getattr(client, command.replace("-", "_"))(**parameters)
    if target is not None:
        assert query is not None, line
        variables[target] = str(jmespath.search(query, response))


def test_the_ledger_restore_brings_every_entry_back(stack: Stack, unique: str) -> None:
    session = boto3.Session(region_name="us-east-1")
    dynamodb = session.client("dynamodb")
    table = f"{stack.name}-files"
    entries = [
        {
            "clientId": {"S": "H1001"},
            "contentId": {"S": f"sha256:{n:064x}"},
            "status": {"S": "success"},
            "fileName": {"S": f"claims-{n}.csv"},
            "sendAttempts": {"N": "1"},
        }
        for n in range(25)
    ]
    for entry in entries:
        dynamodb.put_item(TableName=table, Item=entry)
    variables = {"STACK": stack.name, "EXPORT_BUCKET": f"{stack.name}-exports-{unique}"}

    for line in _section_commands("Restoring the ledger"):
        run(line, session, variables)

    restored = dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]
    key = lambda item: item["contentId"]["S"]  # noqa: E731
    assert sorted(restored, key=key) == sorted(entries, key=key)
    description = dynamodb.describe_table(TableName=table)["Table"]
    assert description["DeletionProtectionEnabled"] is True
    pitr = dynamodb.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
    assert pitr["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
    assert {i["IndexName"] for i in description["GlobalSecondaryIndexes"]} >= {"byJob", "active"}
    exports = dynamodb.list_exports(TableArn=variables["TABLE_ARN"])["ExportSummaries"]
    assert len(exports) == 1
