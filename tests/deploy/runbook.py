"""Running docs/operations.md's commands exactly as they are written there.

Each section's ```` ```sh ```` blocks are read from the markdown, so the doc
and its test cannot drift. A ``conveyor ...`` line runs the real ``conveyor``
command in a process of its own, against the API named by
``CONVEYOR_API_URL``. The AWS CLI is not one of the project's dependencies
(its botocore pin fights aioboto3's), so each ``aws <service> <command>
--option value`` line is run through boto3 as the CLI would: the command's
operation, its options as the operation's parameters typed by the
operation's input shape (a list takes every word up to the next option, a
number is a number, ``--no-x`` is false, ``A=b,C=d`` shorthand a structure,
``file://path`` the file's text, a blob such as ``--body`` the file's bytes),
``--query`` with JMESPath, ``wait`` with the service's waiter, and
``NAME=$(...)`` and ``"$NAME"`` as the shell would.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import jmespath  # type: ignore[import-untyped]

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def section_commands(heading: str) -> list[str]:
    """Every line of every ```` ```sh ```` block under ``## heading``."""
    text = DOC.read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = [part.split("```", 1)[0] for part in section.split("```sh\n")[1:]]
    lines = [line for block in blocks for line in block.splitlines() if line.strip()]
    assert lines, f"no commands under '## {heading}'"
    return lines


def _shorthand(text: str) -> Any:
    if "=" in text and not text.startswith(("arn:", "s3:")):
        return {k: _shorthand(v) for k, v in (pair.split("=", 1) for pair in text.split(","))}
    return {"true": True, "false": False}.get(text, text)


@dataclass
class Runbook:
    """A shell for the runbook's lines: its variables, its working directory
    (where ``routes.yaml`` and ``file://`` paths are), the CLI's environment."""

    session: boto3.Session
    workdir: Path
    variables: dict[str, str]
    cli_env: dict[str, str] = field(default_factory=dict)

    async def run(self, line: str) -> str:
        """Run one line; its output (a ``conveyor`` line's) or its ``--query`` result."""
        target = None
        assignment = re.fullmatch(r"(\w+)=\$\((.*)\)", line)
        if assignment:
            target, line = assignment.groups()
        expanded = re.sub(r"\$(\w+)", lambda m: self.variables[m.group(1)], line)
        words = shlex.split(expanded)
        if words[0] == "conveyor":
            code, output = await self.conveyor(words[1:])
            assert code == 0, f"{line}\n{output}"
            return output
        assert words[0] == "aws", line
        result = await asyncio.to_thread(self._aws, words[1], words[2], words[3:])
        if target is not None:
            self.variables[target] = result
        return result

    async def run_until_ok(self, line: str, timeout: float) -> str:
        """A ``conveyor`` line that succeeds once the services have caught up."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            words = shlex.split(re.sub(r"\$(\w+)", lambda m: self.variables[m.group(1)], line))
            code, output = await self.conveyor(words[1:])
            if code == 0:
                return output
            assert asyncio.get_running_loop().time() < deadline, f"{line}\n{output}"
            await asyncio.sleep(1)

    async def conveyor(self, args: list[str]) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "conveyor_cli.main",
            *args,
            cwd=self.workdir,
            env={**os.environ, **self.cli_env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
        assert process.returncode is not None
        return process.returncode, output.decode(errors="replace")

    def _aws(self, service: str, command: str, rest: list[str]) -> str:
        client = self.session.client({"s3api": "s3"}.get(service, service))
        if command == "wait":
            waiter = client.get_waiter(rest[0].replace("-", "_"))
            model = client.meta.service_model.operation_model(waiter.config.operation)
            parameters, _ = self._parameters(model, rest[1:])
            waiter.wait(**parameters, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
            return ""
        method = command.replace("-", "_")
        model = client.meta.service_model.operation_model(client.meta.method_to_api_mapping[method])
        parameters, query = self._parameters(model, rest)
        response = getattr(client, method)(**parameters)
        response.pop("ResponseMetadata", None)
        found = jmespath.search(query, response) if query else response
        return found if isinstance(found, str) else json.dumps(found, default=str)

    def _parameters(self, model: Any, words: list[str]) -> tuple[dict[str, Any], str | None]:
        members = model.input_shape.members if model.input_shape else {}
        by_option = {name.lower(): name for name in members}
        parameters: dict[str, Any] = {}
        query = None
        index = 0
        while index < len(words):
            option = words[index].removeprefix("--")
            values = []
            index += 1
            while index < len(words) and not words[index].startswith("--"):
                values.append(words[index])
                index += 1
            if option in {"query", "output"}:
                query = values[0] if option == "query" else query
                continue
            negated = option.startswith("no-") and option.replace("-", "")[2:] in by_option
            name = by_option[(option[3:] if negated else option).replace("-", "")]
            parameters[name] = self._typed(members[name], values, negated)
        return parameters, query

    def _typed(self, shape: Any, values: list[str], negated: bool) -> Any:
        kind = shape.type_name
        if kind == "boolean":
            return not negated if not values else values[0] == "true"
        if kind == "list":
            return [self._typed(shape.member, [v], False) for v in values]
        [value] = values
        if kind in {"integer", "long"}:
            return int(value)
        if kind == "blob":
            return (self.workdir / value).read_bytes()
        if value.startswith("file://"):
            return (self.workdir / value.removeprefix("file://")).read_text()
        return _shorthand(value) if kind in {"structure", "map"} else value
