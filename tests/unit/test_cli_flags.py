"""``kubectl agent`` takes its global flags (``-n``/``--namespace``, ``--kubeconfig``, ``-o``/``--output``)
before or after the verb, as kubectl does; given in both places, the one after the verb wins."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent_identity.sdk import cli
from agent_identity.sdk.cli import build_parser, main

from .factories import identity_body

GLOBAL_FLAGS = [
    (["-n", "support"], "namespace", "support"),
    (["--namespace", "support"], "namespace", "support"),
    (["--namespace=support"], "namespace", "support"),
    (["--kubeconfig", "/tmp/admin.kubeconfig"], "kubeconfig", "/tmp/admin.kubeconfig"),
    (["-o", "json"], "output", "json"),
    (["--output", "yaml"], "output", "yaml"),
]
IDS = ["-n", "--namespace", "--namespace=", "--kubeconfig", "-o", "--output"]

Globals = tuple[str, str | None, str | None]  # namespace, kubeconfig, output


@pytest.mark.parametrize(("flag", "dest", "value"), GLOBAL_FLAGS, ids=IDS)
@pytest.mark.parametrize("verb", [["tree"], ["tree", "planner"], ["revoke", "planner"], ["audit", "planner"]])
def test_a_global_flag_is_taken_before_the_verb(verb: list[str], flag: list[str], dest: str, value: str) -> None:
    args = build_parser().parse_args([*flag, *verb])
    assert getattr(args, dest) == value
    assert args.command == verb[0]


@pytest.mark.parametrize(("flag", "dest", "value"), GLOBAL_FLAGS, ids=IDS)
@pytest.mark.parametrize("verb", [["tree"], ["tree", "planner"], ["revoke", "planner"], ["audit", "planner"]])
def test_a_global_flag_is_taken_after_the_verb(verb: list[str], flag: list[str], dest: str, value: str) -> None:
    args = build_parser().parse_args([*verb, *flag])
    assert getattr(args, dest) == value
    assert args.command == verb[0]
    if len(verb) > 1:
        assert args.name == "planner"


def test_a_global_flag_may_also_sit_between_the_verb_and_its_arguments() -> None:
    args = build_parser().parse_args(["audit", "-n", "support", "planner", "-o", "yaml"])
    assert (args.namespace, args.name, args.output) == ("support", "planner", "yaml")
    args = build_parser().parse_args(["verify", "-o", "json", "TOKEN", "--jwks", "jwks.json", "--issuer", "i"])
    assert (args.output, args.assertion, args.jwks) == ("json", "TOKEN", "jwks.json")


def test_absent_global_flags_keep_their_defaults_in_every_verb() -> None:
    for argv in (["tree"], ["revoke", "x"], ["audit", "x"], ["whoami", "t"], ["verify", "t", "--jwks", "j"]):
        args = build_parser().parse_args(argv)
        assert (args.namespace, args.kubeconfig, args.output) == ("default", None, None), argv
    args = build_parser().parse_args(["issue", "--task", "t", "--scope", "get:pods"])
    assert (args.namespace, args.kubeconfig, args.output) == ("default", None, None)


def test_a_flag_before_the_verb_is_not_reset_by_the_verb() -> None:
    args = build_parser().parse_args(["-n", "support", "--kubeconfig", "/k", "-o", "json", "tree", "planner"])
    assert (args.namespace, args.kubeconfig, args.output, args.name) == ("support", "/k", "json", "planner")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-n", "before", "tree", "-n", "after"], ("after", None, None)),
        (["--namespace", "before", "tree", "--namespace=after"], ("after", None, None)),
        (["--kubeconfig", "/before", "tree", "--kubeconfig", "/after"], ("default", "/after", None)),
        (["-o", "yaml", "tree", "-o", "json"], ("default", None, "json")),
        (["-n", "before", "-o", "yaml", "tree", "-o", "json"], ("before", None, "json")),  # only what is repeated moves
    ],
    ids=["-n", "--namespace", "--kubeconfig", "-o", "one-of-two"],
)
def test_given_before_and_after_the_verb_the_one_after_wins(argv: list[str], expected: Globals) -> None:
    args = build_parser().parse_args(argv)
    assert (args.namespace, args.kubeconfig, args.output) == expected


def test_the_verb_specific_flags_are_unchanged() -> None:
    args = build_parser().parse_args(
        ["issue", "--task", "t", "--scope", "get:pods", "--kubeconfig-out", "agent.kubeconfig", "--kubeconfig", "/admin"]
    )
    assert (args.kubeconfig_out, args.kubeconfig) == ("agent.kubeconfig", "/admin")
    args = build_parser().parse_args(["whoami", "TOKEN", "--audience", "a", "--audience", "b", "-n", "support"])
    assert (args.audience, args.namespace) == (["a", "b"], "support")


def test_a_bad_output_format_is_refused_in_either_position(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["-o", "xml", "tree"], ["tree", "-o", "xml"]):
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args(argv)
        assert exit_.value.code == 2
        assert "invalid choice: 'xml'" in capsys.readouterr().err


class FakeKube:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.listed: list[str] = []

    def list_identities(self, namespace: str) -> list[dict[str, Any]]:
        self.listed.append(namespace)
        return [item for item in self.items if item["metadata"]["namespace"] == namespace]


@pytest.mark.parametrize(
    "argv",
    [
        ["--kubeconfig", "/k", "-n", "support", "-o", "json", "tree"],
        ["tree", "--kubeconfig", "/k", "-n", "support", "-o", "json"],
        ["-n", "default", "-o", "yaml", "tree", "--kubeconfig=/k", "--namespace", "support", "--output=json"],
    ],
    ids=["before", "after", "both"],
)
def test_main_uses_the_flags_wherever_they_are(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    kube = FakeKube([identity_body("planner", namespace="support"), identity_body("elsewhere", namespace="default")])
    kubeconfigs: list[str | None] = []

    def load(kubeconfig: str | None = None) -> str:
        kubeconfigs.append(kubeconfig)
        return "configuration"

    monkeypatch.setattr(cli, "load_client_configuration", load)
    monkeypatch.setattr(cli, "Kube", lambda configuration: kube)
    assert main(argv) == 0
    assert kubeconfigs == ["/k"] and kube.listed == ["support"]
    tree = json.loads(capsys.readouterr().out)
    assert [node["name"] for node in tree] == ["planner"]
