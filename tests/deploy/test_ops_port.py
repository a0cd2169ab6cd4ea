"""COHORTSYNC_OPS_PORT as configured: never the HTTP port, and named in make run's banner."""

from __future__ import annotations

import pytest

from deploy import local
from schemas.settings import Settings, SettingsError


def test_the_ops_port_must_differ_from_the_http_port() -> None:
    with pytest.raises(SettingsError, match="COHORTSYNC_OPS_PORT"):
        Settings.from_env({"COHORTSYNC_HTTP_PORT": "8080", "COHORTSYNC_OPS_PORT": "8080"})
    assert Settings.from_env({"COHORTSYNC_OPS_PORT": "9100"}).ops_port == 9100


def test_make_run_prints_the_ops_url_when_one_is_set() -> None:
    services = {"Postgres": "embedded", "Redis": "embedded"}
    public, ops = "http://127.0.0.1:8080", "http://127.0.0.1:8081"
    banner = local._banner(public, ops, "cs_key", services)
    assert f"ops:       {ops} (metrics, dashboard, probes)" in banner
    assert f"dashboard: {ops}/dashboard#key=cs_key" in banner
    assert f"metrics:   {ops}/metrics" in banner
    same_port = local._banner(public, public, "cs_key", services)
    assert "ops:" not in same_port
    assert f"dashboard: {public}/dashboard#key=cs_key" in same_port
