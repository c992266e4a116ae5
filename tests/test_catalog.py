"""The shipped catalog is valid, complete and consistent; malformed catalogs fail with one
line naming the file, the control and the field."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from kubeprobe.catalog import (DEFAULT_CATALOG, CatalogError, attack_module_path, load_attack,
                               load_catalog)
from kubeprobe.outcome import Expectation
from kubeprobe.reference import cis_section
from kubeprobe.discovery import KINDS

CATALOG = load_catalog()


def test_shipped_catalog_loads_with_unique_ids():
    ids = [c.id for c in CATALOG.controls]
    assert len(ids) == len(set(ids)) and len(ids) >= 14


@pytest.mark.parametrize("control", CATALOG.controls, ids=lambda c: c.id)
def test_every_attack_module_exists_and_has_the_interface(control):
    assert attack_module_path(control.attack).is_file()
    module = load_attack(control.attack)
    assert module.TARGETS in KINDS
    assert module.__doc__ and "BLOCKED" in module.__doc__ and "SUCCEEDED" in module.__doc__


@pytest.mark.parametrize("control", CATALOG.controls, ids=lambda c: c.id)
def test_block_type_controls_name_their_authorities(control):
    if control.expectation("default") is Expectation.BLOCKED:
        assert control.blocked_by, control.id


def test_every_attack_module_is_used_by_a_control():
    used = {c.attack for c in CATALOG.controls}
    shipped = {p.stem for p in attack_module_path("x").parent.glob("*.py")
               if not p.stem.startswith("_")}
    assert shipped == used, f"attack modules without a control: {shipped - used}"


def _mutated(tmp_path, mutate):
    doc = yaml.safe_load(DEFAULT_CATALOG.read_text())
    mutate(doc)
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d["controls"][0].pop("attack"), "control ETCD-01: missing field(s) attack"),
    (lambda d: d["controls"][0].update(attack="no_such_attack"),
     "attacks/no_such_attack.py"),
    (lambda d: d["controls"][0].update(expected={"default": "MAYBE"}), "expected.default"),
    (lambda d: d["controls"][0].update(blocked_by=["a_shrug"]), "field blocked_by"),
    (lambda d: d["controls"][1].update(id="ETCD-01"), "duplicate id"),
    (lambda d: d["controls"][0].update(vantage="moon"), "field vantage"),
    (lambda d: d["controls"][0]["mappings"].update(mitre="TXXXX"), "mappings.mitre"),
    (lambda d: d["controls"][0].update(expected={"default": "ALERTED"}), "field alert"),
    (lambda d: d["controls"][0].update(surprise=1), "unknown field(s) surprise"),
    (lambda d: d.pop("profiles"), "profiles"),
])
def test_malformed_catalog_names_the_problem(tmp_path, mutate, message):
    with pytest.raises(CatalogError) as err:
        load_catalog(_mutated(tmp_path, mutate))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_unparseable_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("controls:\n  - id: [unclosed\n")
    with pytest.raises(CatalogError, match=r"broken.yaml: line \d+"):
        load_catalog(path)


def test_cli_catalog_lists_controls_and_rejects_malformed(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "kubeprobe.cli", "catalog"],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "ETCD-01" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("controls: 3\n")
    failed = subprocess.run([sys.executable, "-m", "kubeprobe.cli", "catalog", "--catalog",
                             str(bad)], capture_output=True, text=True)
    assert failed.returncode == 2
    assert failed.stderr.count("\n") == 1 and "malformed catalog" in failed.stderr


def test_every_mapping_is_named_for_the_report():
    """The report's CIS and ATT&CK tables and docs/controls.md show names, not bare ids."""
    sections = CATALOG.benchmarks["cis_sections"]
    techniques = CATALOG.benchmarks["mitre_techniques"]
    used_sections = {cis_section(i) for c in CATALOG.controls for i in c.mappings["cis"]}
    used_techniques = {t for c in CATALOG.controls for t in c.mappings["mitre"]}
    assert used_sections <= set(sections), used_sections - set(sections)
    assert used_techniques <= set(techniques), used_techniques - set(techniques)


def test_malformed_benchmarks_block_names_the_field(tmp_path):
    path = _mutated(tmp_path, lambda doc: doc["benchmarks"].update(cis_sections={4.2: "x"}))
    with pytest.raises(CatalogError, match="benchmarks.cis_sections: must map ids"):
        load_catalog(path)
