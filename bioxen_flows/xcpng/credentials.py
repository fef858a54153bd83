"""`XCPngCredentials`: how to log in to an XCP-ng pool, kept in a Prefect block.

As prefect-kubernetes keeps cluster access in `KubernetesCredentials`, the pool's URL, user,
TLS settings and (secret) password live in one block saved on the Prefect server; a flow is
given the block's name, never the password. Register the type once per server with
``prefect block register -m bioxen_flows.xcpng.credentials`` (saving a block registers it
too). This module imports Prefect, so only the orchestration layer and `backend.session`
(when a config names a block) load it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from bioxen_flows.errors import InputError
from bioxen_flows.xcpng import xapi


class XCPngCredentials(Block):
    """Credentials for an XCP-ng pool's XAPI (XML-RPC over HTTPS).

    Example:
        ```python
        from bioxen_flows.xcpng.credentials import XCPngCredentials
        XCPngCredentials(url="https://pool.lab", username="bioxen",
                         password="...", ca_file="/etc/ssl/lab-ca.pem").save("BLOCK_NAME")
        credentials = XCPngCredentials.load("BLOCK_NAME")
        with credentials.get_session() as x:
            x.VM.get_all()
        ```
        A config names the block instead: `xcpng_config: {credentials_block: BLOCK_NAME, ...}`.
    """

    _block_type_name = "XCP-ng Credentials"
    _block_type_slug = "xcp-ng-credentials"
    _description = "Log in to an XCP-ng pool's XAPI; used by BioXen Flows' xcpng bio-VMs."
    # XAPI's guide to sessions and logging in (the project hosts no docs; see docs/xcpng.md)
    _documentation_url = "https://xapi-project.github.io/xen-api/usage.html"

    url: str = Field(description="The pool master's (or any member's) XAPI URL (https://...).")
    username: str = Field(min_length=1, description="The XCP-ng user BioXen logs in as.")
    password: SecretStr = Field(description="That user's password (stored encrypted).")
    ca_file: str | None = Field(
        default=None, description="CA bundle that signed the pool's TLS certificate.")
    ignore_ssl: bool = Field(
        default=False, description="Skip TLS verification (only for a lab you trust).")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise InputError(f"must be an http(s) URL with a host, got {value!r}")
        return value

    def endpoint(self) -> xapi.XapiEndpoint:
        """Where and how to reach the pool (without the password)."""
        return xapi.XapiEndpoint(url=self.url, username=self.username, ca_file=self.ca_file,
                                 ignore_ssl=self.ignore_ssl)

    @contextmanager
    def get_session(self) -> Iterator[Any]:
        """A logged-in XAPI session (`session.VM.get_all()`, ...); logged out on exit."""
        with xapi.xapi_session(self.endpoint(), self.password.get_secret_value()) as x:
            yield x
