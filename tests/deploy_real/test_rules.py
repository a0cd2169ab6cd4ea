"""The alert rules and the scrape config in deploy/prometheus, as Debian's promtool reads them:
they load, and every alert's unit tests (alerts_test.yaml) pass and can fail."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy_real.prometheus import PROMETHEUS_DIR, alert_expressions

pytestmark = pytest.mark.deploy

ALERTS = (
    "CohortsyncNoLiveWorker",
    "CohortsyncBacklogNotDraining",
    "CohortsyncDeadLetters",
    "CohortsyncDependencyDown",
    "CohortsyncBelowRateLimit",
)


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_rules_and_scrape_config_load() -> None:
    rules = promtool("check", "rules", "alerts.yaml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in rules.stdout
    config = promtool("check", "config", "--syntax-only", "prometheus.yaml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_every_alert_has_unit_tests_and_they_pass() -> None:
    assert sorted(e.where.removeprefix("alert ") for e in alert_expressions()) == sorted(ALERTS)
    tests = (PROMETHEUS_DIR / "alerts_test.yaml").read_text()
    for alert in ALERTS:
        assert f"alertname: {alert}" in tests, alert
    result = promtool("test", "rules", "alerts_test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_unit_tests_catch_a_wrong_threshold(tmp_path: Path) -> None:
    for name in ("alerts.yaml", "alerts_test.yaml"):
        shutil.copy(PROMETHEUS_DIR / name, tmp_path / name)
    rules = tmp_path / "alerts.yaml"
    rules.write_text(rules.read_text().replace("< 0.9 *", "< 0.5 *"))
    result = promtool("test", "rules", "alerts_test.yaml", cwd=tmp_path)
    assert result.returncode != 0
    assert "CohortsyncBelowRateLimit" in result.stdout + result.stderr
