"""The Falco rule generator: shipped rules equal its output, the output has Falco's rules-file
structure (checked by a validator that is itself shown to reject broken files), golden output
for a small allowlist, and one-line errors naming the bad field."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubeprobe.catalog import load_catalog
from kubeprobe.rules import STOCK_MACROS, AllowlistError, generate

REPO = Path(__file__).resolve().parent.parent
FALCO = REPO / "fixtures" / "falco"
GOLDEN = Path(__file__).parent / "golden"
PRIORITIES = {"EMERGENCY", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE",
              "INFORMATIONAL", "DEBUG"}
SOURCES = {"syscall", "k8s_audit"}
IDENT = re.compile(r"\b(kubeprobe_[a-z0-9_]+)\b")


def falco_structure_errors(text: str) -> list[str]:
    """Falco rules-file structure (falcosecurity/falco docs, "Rules"): a list of items, each
    exactly one of rule / macro / list / required_engine_version; rules carry desc, condition,
    output and a valid priority; every kubeprobe_* macro or list is defined before use;
    parentheses balance."""
    errors, defined = [], set(STOCK_MACROS)
    items = yaml.safe_load(text)
    if not isinstance(items, list):
        return ["top level is not a list"]
    for index, item in enumerate(items):
        kinds = [k for k in ("rule", "macro", "list", "required_engine_version") if k in item]
        if len(kinds) != 1:
            errors.append(f"item {index}: is {kinds or 'nothing'}")
            continue
        kind = kinds[0]
        if kind == "list":
            if not isinstance(item.get("items"), list):
                errors.append(f"list {item['list']}: items is not a list")
            defined.add(item["list"])
            continue
        if kind == "required_engine_version":
            continue
        condition = item.get("condition", "")
        if condition.count("(") != condition.count(")"):
            errors.append(f"{kind} {item[kind]}: unbalanced parentheses")
        for used in IDENT.findall(condition):
            if used not in defined:
                errors.append(f"{kind} {item[kind]}: {used} used before it is defined")
        if kind == "macro":
            defined.add(item["macro"])
            continue
        for key in ("desc", "condition", "output", "priority"):
            if not item.get(key):
                errors.append(f"rule {item['rule']}: no {key}")
        if item.get("priority") not in PRIORITIES:
            errors.append(f"rule {item['rule']}: priority {item.get('priority')!r}")
        if item.get("source", "syscall") not in SOURCES:
            errors.append(f"rule {item['rule']}: source {item.get('source')!r}")
    return errors


def shipped_allowlist() -> dict:
    return yaml.safe_load((FALCO / "allowlist.yaml").read_text())


def test_shipped_rules_are_the_generators_output():
    assert (FALCO / "kubeprobe_rules.yaml").read_text() == generate(shipped_allowlist())


def test_generated_rules_have_falco_structure():
    assert falco_structure_errors(generate(shipped_allowlist())) == []


@pytest.mark.parametrize(("broken", "error"), [
    ("- rule: a\n  macro: b\n  condition: x\n", "is ['rule', 'macro']"),
    ("- rule: a\n  desc: d\n  condition: (x\n  output: o\n  priority: WARNING\n",
     "unbalanced parentheses"),
    ("- rule: a\n  desc: d\n  condition: kubeprobe_nope\n  output: o\n  priority: WARNING\n",
     "kubeprobe_nope used before it is defined"),
    ("- rule: a\n  desc: d\n  condition: x\n  output: o\n  priority: LOUD\n", "priority 'LOUD'"),
    ("- rule: a\n  condition: x\n  output: o\n  priority: WARNING\n", "no desc"),
])
def test_the_validator_rejects_broken_rules(broken, error):
    assert any(error in e for e in falco_structure_errors(broken)), falco_structure_errors(broken)


def test_golden_output_for_a_small_allowlist():
    allowlist = yaml.safe_load((GOLDEN / "allowlist-small.yaml").read_text())
    assert generate(allowlist) == (GOLDEN / "allowlist-small.rules.yaml").read_text()


def test_every_rule_the_catalog_expects_is_generated():
    rules = {i["rule"] for i in yaml.safe_load(generate(shipped_allowlist())) if "rule" in i}
    for control in load_catalog().controls:
        if control.alert and control.alert.get("source") == "falco":
            assert control.alert["rule"] in rules, control.id


def test_outputs_carry_the_nonce_fields():
    for item in yaml.safe_load(generate(shipped_allowlist())):
        if "rule" in item and item.get("source", "syscall") == "syscall":
            assert "%proc.cmdline" in item["output"] and "%k8s.pod.name" in item["output"]


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d["components"]["etcd"].update(processes="etcd"),
     "allowlist.components.etcd.processes: must be a list"),
    (lambda d: d["components"]["etcd"].pop("write_dirs"),
     "allowlist.components.etcd.write_dirs: missing"),
    (lambda d: d["components"]["etcd"].update(shell=True),
     "allowlist.components.etcd.shell: unknown field"),
    (lambda d: d["guidance"].update(kubelet_ports=["10250"]),
     "allowlist.guidance.kubelet_ports"),
    (lambda d: d.update(components={}), "allowlist.components"),
    (lambda d: d["guidance"].update(binary_dir=["/bin"]),
     "allowlist.guidance.binary_dir: unknown field"),
    (lambda d: d["guidance"].update(binary_dirs="/bin"),
     "allowlist.guidance.binary_dirs: must be a list"),
    (lambda d: d["guidance"].update(privileged_allowed=["kube-proxy"]),
     "allowlist.guidance.privileged_allowed: must be a list of namespace/container"),
    (lambda d: d["guidance"].update(sensitive_mounts=["proc"]),
     "allowlist.guidance.sensitive_mounts: must be a list of absolute host paths"),
    (lambda d: d["guidance"].update(namespace_change="yes"),
     "allowlist.guidance.namespace_change: must be true or false"),
    (lambda d: d["guidance"].update(secret_read_after_ns="60s"),
     "allowlist.guidance.secret_read_after_ns: must be a number"),
])
def test_bad_allowlist_names_the_field(mutate, message):
    doc = shipped_allowlist()
    mutate(doc)
    with pytest.raises(AllowlistError, match=re.escape(message)):
        generate(doc)


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "allowlist.yaml"
    bad.write_text("components: {etcd: {container: etcd}}\n")
    done = subprocess.run([sys.executable, "-m", "kubeprobe.rules", "generate", str(bad)],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "allowlist.components.etcd" in done.stderr


def test_outbound_rules_see_in_cluster_destinations():
    """Falco's stock `outbound` macro ignores RFC 1918 destinations (every pod, Service and
    kind node address); the generated outbound rules must not inherit that blind spot."""
    items = yaml.safe_load(generate(shipped_allowlist()))
    outbound = [i for i in items if "rule" in i and "outbound connection" in i["rule"]]
    assert outbound
    for rule in outbound:
        assert rule["condition"].startswith("kubeprobe_outbound and "), rule["rule"]
    macro = next(i for i in items if i.get("macro") == "kubeprobe_outbound")
    assert "rfc_1918" not in macro["condition"] and "127.0.0.0/8" in macro["condition"]


def test_catalog_matcher_fields_are_in_the_rule_output():
    """Falco's output_fields carry only the fields the rule's output names: a matcher on any
    other field could never match."""
    rules = {i["rule"]: i for i in yaml.safe_load(generate(shipped_allowlist())) if "rule" in i}
    for control in load_catalog().controls:
        if control.alert and control.alert.get("source") == "falco":
            output = rules[control.alert["rule"]]["output"]
            for field in control.alert.get("fields", {}):
                assert f"%{field}" in output, (control.id, field)
