from __future__ import annotations

from typing import Any

import pytest

from conveyor_shared.backends.s3 import S3Store


@pytest.fixture
async def source_bucket(aws: dict[str, Any], unique: str) -> S3Store:
    """An S3 bucket in moto to copy from, as a pick-up would be."""
    await aws["s3"].create_bucket(Bucket=f"src-{unique}")
    return S3Store(aws["s3"], f"src-{unique}")
