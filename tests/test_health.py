"""`bioxen doctor`'s checks, called as the CLI calls them."""

from __future__ import annotations

import pytest

from bioxen_flows import health
from bioxen_flows.errors import BioXenError
from bioxen_flows.testing.xapi_simulator import XapiSimulator

PASSWORD = "pool-pw-health-1234"


@pytest.mark.usefixtures("prefect_api_url")
def test_the_pool_check_logs_in_through_a_credentials_block() -> None:
    """A config that names a saved XCPngCredentials block has no `url`: the check used to
    fail with KeyError 'url' instead of logging in through the block."""
    from bioxen_flows.xcpng.credentials import XCPngCredentials

    with XapiSimulator(password=PASSWORD) as sim:
        XCPngCredentials(url=sim.url, username="root", password=PASSWORD).save(
            "doctor-pool", overwrite=True)
        cfg = {"credentials_block": "doctor-pool", "template": "bioxen-guest",
               "ssh_user": "x", "ssh_key_path": "/nonexistent",
               "ssh_host_key": "SHA256:" + "A" * 43}
        detail = health.check_xcpng(cfg)
        assert "credentials block 'doctor-pool'" in detail and "1 host(s)" in detail
        assert sim.sessions() == []  # logged out again


def test_a_failing_check_is_reported_as_a_bioxen_error_and_never_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each failed check is a BioXenError with the reason; run_checks reports it."""
    monkeypatch.setattr(health, "MIN_FREE_DISK_BYTES", 1 << 62)
    with pytest.raises(BioXenError, match="free under"):
        health.check_disk()
    checks = {c.name: c for c in health.run_checks()}
    assert not checks["disk"].ok and "free under" in checks["disk"].detail
