"""The operator's configuration: flags, their environment defaults, and the refusal to start
without webhooks. No server."""

from __future__ import annotations

from datetime import timedelta

import pytest

from agent_identity.app.config import parse_args


def test_flags_are_typed_and_switches_are_off_unless_given() -> None:
    config = parse_args(["--webhook-port", "9443", "-n", "a", "-n", "b", "--retain-for", "90s", "--leader-election"], {})
    assert config.namespaces == ("a", "b")
    assert config.webhook_port == 9443 and config.webhooks
    assert config.retain_for == timedelta(seconds=90) and config.lease_duration == timedelta(seconds=8)
    assert config.leader_election and not config.require_profile
    assert (config.operator_namespace, config.leader_election_namespace) == ("agent-identity-system", "default")


def test_the_environment_gives_defaults_and_a_flag_overrides_it() -> None:
    environ = {
        "AGENT_IDENTITY_WEBHOOK_PORT": "8443",
        "AGENT_IDENTITY_WORKERS": "3",
        "AGENT_IDENTITY_REQUIRE_PROFILE": "true",
        "AGENT_IDENTITY_NAMESPACES": "x,y",
        "POD_NAMESPACE": "ops",
        "KUBECONFIG": "/k",
    }
    config = parse_args(["--workers", "5"], environ)
    assert (config.webhook_port, config.workers, config.require_profile) == (8443, 5, True)
    assert config.namespaces == ("x", "y") and config.kubeconfig == "/k"
    # POD_NAMESPACE stands in for each namespace setting not given its own variable
    assert config.operator_namespace == config.signing_namespace == config.leader_election_namespace == "ops"
    assert parse_args([], {**environ, "AGENT_IDENTITY_OPERATOR_NAMESPACE": "own"}).operator_namespace == "own"


def test_without_webhooks_it_refuses_to_start_unless_told_it_is_unsafe(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args([], {})
    assert "--unsafe-no-admission-webhooks" in capsys.readouterr().err
    assert not parse_args(["--unsafe-no-admission-webhooks"], {}).webhooks


def test_a_bad_duration_is_a_usage_error_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--unsafe-no-admission-webhooks", "--resync-period", "soon"], {})
    assert "--resync-period" in capsys.readouterr().err
