"""`outguard schema` against what `check` accepts and what the README shows (issue 14: the
schema refused the README's own `syslog: "udp://…"` and had no descriptions)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from outguard.errors import PolicyError
from outguard.policy.load import load_text
from outguard.policy.schema import policy_schema
from tests.policy.test_kernel_fuzz import policies

README = Path(__file__).resolve().parents[2] / "README.md"
SCHEMA = policy_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def readme_yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)


def properties(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(model, property, its schema) for the document and every model it uses."""
    out = [("policy", name, node) for name, node in schema["properties"].items()]
    for model, node in schema["$defs"].items():
        out += [(model, name, prop) for name, prop in node.get("properties", {}).items()]
    return out


def test_the_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_every_property_has_a_description() -> None:
    missing = [f"{model}.{name}" for model, name, node in properties(SCHEMA)
               if not str(node.get("description", "")).strip()]
    assert missing == []


def test_the_readme_has_policy_examples() -> None:
    assert len(readme_yaml_blocks()) >= 2


@pytest.mark.parametrize("block", readme_yaml_blocks())
def test_every_readme_example_validates_against_the_schema(block: str) -> None:
    doc = _as_policy_reads_it(block)
    doc.setdefault("version", 1)  # a fragment shows one section
    VALIDATOR.validate(doc)


def test_the_readme_policy_passes_check(tmp_path: Path) -> None:
    (block,) = [b for b in readme_yaml_blocks() if b.startswith("version: 1")]
    for name in re.findall(r"\{file: ([\w./-]+)\}", block):
        (tmp_path / name).write_text("198.51.100.99\n")
    for names in re.findall(r"blocklists: \[([^]]*)\]", block):
        for name in names.split(","):
            (tmp_path / name.strip()).write_text("ads.example.test\n")
    try:
        load_text(block, "README.md", base_dir=tmp_path)
    except PolicyError as err:
        # a user the README names may be missing on a machine; nothing else may be wrong
        assert all("on this machine" in p.message for p in err.problems), str(err)


@pytest.mark.parametrize("alert", [
    {"syslog": "udp://127.0.0.1:514"}, {"syslog": "tcp://127.0.0.1:601"},
    {"webhook": "http://127.0.0.1:9000/hook"},
    {"webhook": {"url": "https://hooks.example.test/x", "retries": 1}, "min_severity": "high"},
    {"stdout": "text"},
])
def test_alert_shorthands_validate(alert: dict[str, Any]) -> None:
    VALIDATOR.validate({"version": 1, "alerts": [alert]})
    load_text(yaml.safe_dump({"version": 1, "mode": "audit", "alerts": [alert]}), "p.yaml")


def test_the_schema_refuses_what_check_refuses_for_shape() -> None:
    for doc in ({"version": 2}, {"version": 1, "allowed": []},
                {"version": 1, "allow": [{"name": "a", "too": ["192.0.2.1"]}]},
                {"version": 1, "alerts": [{"syslog": 514}]}):
        assert not VALIDATOR.is_valid(doc), doc


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=policies())
def test_every_policy_check_accepts_validates_against_the_schema(doc: dict[str, Any]) -> None:
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    try:
        load_text(text, "p.yaml", base_dir=Path("/nonexistent-outguard-test-dir"))
    except PolicyError:
        return
    VALIDATOR.validate(_as_policy_reads_it(text))


def _as_policy_reads_it(text: str) -> Any:
    """The document as the policy loader reads YAML (no YAML 1.1 surprises)."""
    from outguard.policy.yamlpos import load_yaml

    data, _pos, _problems = load_yaml(text)
    return data


def test_every_key_the_schema_knows_is_in_the_readme() -> None:
    """Issue 14: many keys were only in the schema."""
    text = README.read_text()
    missing = sorted({name for _model, name, _node in properties(SCHEMA)
                      if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text)})
    assert missing == []
