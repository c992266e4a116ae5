"""The control catalog: controls are data, code decides nothing the data states.

One YAML file (`kubeprobe/catalog.yaml` unless `--catalog` names another). Each control:

  id           stable id, COMPONENT-NN (e.g. ETCD-01)
  title        one line
  component    etcd | kubelet | kube-apiserver | admission | registry | runtime
  guidance     the sentence of hardening guidance it enforces
  attack       module name under attacks/ (one attack = one module)
  params       keyword arguments for the attack (optional)
  identity     who the attacker is (anonymous, a ServiceAccount token, a foreign cert, ...)
  vantage      runner (outside the cluster) | pod (a compromised workload)
  expected     {profile: BLOCKED | ALERTED | BLOCKED_OR_ALERTED}, `default` required
  blocked_by   authorities that count as the control holding (see outcome.Authority)
  weaker       {authority: why a refusal by it is still a FAIL} (optional)
  alert        alert matcher for ALERTED controls (optional, used by the alert sources)
  intrusive    true if the attack creates privileged or host-access workloads, Nodes or CSRs,
               writes to kube-system, or drops files into containers: SKIPPED on an existing
               cluster without --intrusive
  long_running true if the attack waits long by design (an ageing process): it is started
               first and reported last, so its wait overlaps every other control
  mappings     {cis: benchmark id(s), [] where the benchmark has none; mitre: technique id(s)}
  remediation  what to change when the control fails

Top level: `profiles` (name -> description, `default` required), `controls`, and optionally
`attacks_dir` (the directory of the attack modules, relative to the catalog file; default
the project's attacks/, installed as kubeprobe.attacks), so another catalog can bring attacks of
its own, and `benchmarks`: the benchmarks' names (`cis`, `mitre`), and the titles of the CIS
sections (`cis_sections`: "4.2" -> "Worker Nodes: Kubelet") and the names of the ATT&CK
techniques (`mitre_techniques`: "T1613" -> "Container and Resource Discovery") the mappings
use, for the report and the control reference.
"""
from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubeprobe import resources
from kubeprobe.alerts import parse_matcher
from kubeprobe.outcome import Authority, Expectation

DEFAULT_CATALOG = Path(__file__).with_name("catalog.yaml")
ATTACKS_DIR = resources.ATTACKS_DIR  # attacks/ in a checkout, kubeprobe/attacks installed

_ID = re.compile(r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)*-\d{2,3}$")
_MITRE = re.compile(r"^T\d{4}(\.\d{3})?$")
VANTAGES = ("runner", "pod")
_REQUIRED = ("id", "title", "component", "guidance", "attack", "identity", "vantage",
             "expected", "mappings", "remediation")
_OPTIONAL = ("params", "blocked_by", "weaker", "alert", "intrusive", "long_running")


class CatalogError(Exception):
    """The catalog is malformed. The message names the file, the control and the field."""


@dataclass(frozen=True)
class Control:
    id: str
    title: str
    component: str
    guidance: str
    attack: str
    identity: str
    vantage: str
    expected: dict[str, Expectation]
    mappings: dict[str, list[str]]
    remediation: str
    params: dict[str, Any] = field(default_factory=dict)
    blocked_by: frozenset[Authority] = frozenset()
    weaker: dict[Authority, str] = field(default_factory=dict)
    alert: dict[str, Any] | None = None
    intrusive: bool = False
    long_running: bool = False

    def expectation(self, profile: str) -> Expectation:
        return self.expected.get(profile, self.expected["default"])


@dataclass(frozen=True)
class Catalog:
    path: Path
    profiles: dict[str, str]
    controls: tuple[Control, ...]
    attacks_dir: Path = ATTACKS_DIR
    benchmarks: dict[str, Any] = field(default_factory=dict)

    def get(self, control_id: str) -> Control:
        for control in self.controls:
            if control.id == control_id:
                return control
        raise KeyError(control_id)


def _fail(path: Path, where: str, message: str) -> CatalogError:
    return CatalogError(f"malformed catalog {path}: {where}: {message}")


def _string_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError("must be a string or a list of strings")


def attack_module_path(name: str, attacks_dir: Path = ATTACKS_DIR) -> Path:
    return attacks_dir / f"{name}.py"


def _parse_control(raw: Any, path: Path, index: int, profiles: dict[str, str],
                   attacks_dir: Path) -> Control:
    where = f"controls[{index}]"
    if not isinstance(raw, dict):
        raise _fail(path, where, "must be a mapping")
    where = f"control {raw.get('id', f'#{index}')}"
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise _fail(path, where, f"missing field(s) {', '.join(missing)}")
    unknown = sorted(set(raw) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise _fail(path, where, f"unknown field(s) {', '.join(unknown)}")
    for key in ("id", "title", "component", "guidance", "attack", "identity", "remediation"):
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise _fail(path, where, f"field {key} must be a non-empty string")
    if not _ID.match(raw["id"]):
        raise _fail(path, where, "field id must look like ETCD-01")
    if raw["vantage"] not in VANTAGES:
        raise _fail(path, where, f"field vantage must be one of {', '.join(VANTAGES)}")
    if not attack_module_path(raw["attack"], attacks_dir).is_file():
        raise _fail(path, where, f"field attack names a module that does not exist: "
                                 f"{attack_module_path(raw['attack'], attacks_dir)}")

    expected_raw = raw["expected"]
    if not isinstance(expected_raw, dict) or "default" not in expected_raw:
        raise _fail(path, where, "field expected must map profiles to outcomes and "
                                 "include `default`")
    expected = {}
    for profile, value in expected_raw.items():
        if profile not in profiles:
            raise _fail(path, where, f"field expected names unknown profile {profile!r}")
        try:
            expected[profile] = Expectation(value)
        except ValueError:
            raise _fail(path, where, f"field expected.{profile} must be one of "
                                     f"{', '.join(e.value for e in Expectation)}") from None

    def authorities(key: str, value: Any) -> list[Authority]:
        try:
            return [Authority(v) for v in _string_list(value)]
        except ValueError:
            raise _fail(path, where, f"field {key} must list authorities from "
                                     f"{', '.join(a.value for a in Authority)}") from None

    blocked_by = frozenset(authorities("blocked_by", raw.get("blocked_by", [])))
    blocks = any(e in (Expectation.BLOCKED, Expectation.BLOCKED_OR_ALERTED)
                 for e in expected.values())
    if blocks and not blocked_by:
        raise _fail(path, where, "field blocked_by is required when a profile expects BLOCKED")
    weaker_raw = raw.get("weaker") or {}
    if not isinstance(weaker_raw, dict):
        raise _fail(path, where, "field weaker must map authorities to explanations")
    weaker = {authorities("weaker", k)[0]: str(v) for k, v in weaker_raw.items()}
    alerts = any(e in (Expectation.ALERTED, Expectation.BLOCKED_OR_ALERTED)
                 for e in expected.values())
    if alerts and not isinstance(raw.get("alert"), dict):
        raise _fail(path, where, "field alert (a matcher) is required when a profile "
                                 "expects ALERTED")
    if raw.get("alert") is not None:
        try:
            parse_matcher(raw["alert"])
        except ValueError as exc:
            raise _fail(path, where, f"field {exc}") from None

    mappings_raw = raw["mappings"]
    if not isinstance(mappings_raw, dict) or not {"cis", "mitre"} <= set(mappings_raw):
        raise _fail(path, where, "field mappings must have cis and mitre")
    try:
        mappings = {k: _string_list(v) for k, v in mappings_raw.items()}
    except ValueError as exc:
        raise _fail(path, where, f"field mappings: {exc}") from None
    if not mappings["mitre"]:
        raise _fail(path, where, "field mappings.mitre needs at least one technique id")
    bad = [m for m in mappings["mitre"] if not _MITRE.match(m)]
    if bad:
        raise _fail(path, where, f"field mappings.mitre has malformed technique id(s) {bad}")

    params = raw.get("params") or {}
    if not isinstance(params, dict):
        raise _fail(path, where, "field params must be a mapping")
    for flag in ("intrusive", "long_running"):
        if not isinstance(raw.get(flag, False), bool):
            raise _fail(path, where, f"field {flag} must be true or false")
    return Control(
        id=raw["id"], title=raw["title"].strip(), component=raw["component"],
        guidance=" ".join(raw["guidance"].split()), attack=raw["attack"],
        identity=raw["identity"], vantage=raw["vantage"], expected=expected,
        mappings=mappings, remediation=" ".join(raw["remediation"].split()), params=params,
        blocked_by=blocked_by, weaker=weaker, alert=raw.get("alert"),
        intrusive=raw.get("intrusive", False), long_running=raw.get("long_running", False))


def load_catalog(path: Path | str = DEFAULT_CATALOG, attacks_dir: Path | None = None) -> Catalog:
    """Load and validate the whole catalog; raise CatalogError naming the first problem.
    `attacks_dir` overrides the catalog's own `attacks_dir` (default: attacks/)."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise CatalogError(f"cannot read catalog {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "YAML"
        raise _fail(path, where, str(getattr(exc, "problem", exc))) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("controls"), list):
        raise _fail(path, "top level", "must be a mapping with a `controls` list")
    profiles = doc.get("profiles")
    if not isinstance(profiles, dict) or "default" not in profiles:
        raise _fail(path, "profiles", "must map profile names to descriptions, incl. default")
    if attacks_dir is None:
        own = doc.get("attacks_dir")
        if own is not None and (not isinstance(own, str) or not own.strip()):
            raise _fail(path, "attacks_dir", "must be a directory path")
        attacks_dir = (path.parent / own) if own else ATTACKS_DIR
        if not attacks_dir.is_dir():
            raise _fail(path, "attacks_dir", f"{attacks_dir} is not a directory")
    benchmarks = _benchmarks(doc.get("benchmarks"), path)
    controls = tuple(_parse_control(raw, path, i, profiles, attacks_dir)
                     for i, raw in enumerate(doc["controls"]))
    seen: set[str] = set()
    for control in controls:
        if control.id in seen:
            raise _fail(path, f"control {control.id}", "duplicate id")
        seen.add(control.id)
    return Catalog(path=path, profiles=dict(profiles), controls=controls,
                   attacks_dir=Path(attacks_dir), benchmarks=benchmarks)


_BENCHMARK_NAMES = ("cis", "mitre")
_BENCHMARK_TABLES = ("cis_sections", "mitre_techniques")


def _benchmarks(raw: Any, path: Path) -> dict[str, Any]:
    """The optional `benchmarks` block: names are strings, tables map ids to strings."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _fail(path, "benchmarks", "must be a mapping")
    unknown = sorted(set(raw) - set(_BENCHMARK_NAMES) - set(_BENCHMARK_TABLES))
    if unknown:
        raise _fail(path, "benchmarks", f"unknown field(s) {', '.join(map(str, unknown))}")
    for key in _BENCHMARK_NAMES:
        if key in raw and not isinstance(raw[key], str):
            raise _fail(path, f"benchmarks.{key}", "must be a string")
    for key in _BENCHMARK_TABLES:
        table = raw.get(key, {})
        if not isinstance(table, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in table.items()):
            raise _fail(path, f"benchmarks.{key}", "must map ids (quoted strings) to names")
    return {key: raw[key] for key in raw}


def load_attack(name: str, attacks_dir: Path = ATTACKS_DIR):
    """Import attacks/<name>.py by path (no sys.path games) and return the module."""
    path = attack_module_path(name, attacks_dir)
    spec = importlib.util.spec_from_file_location(f"kubeprobe_attacks.{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "run", None)):
        raise CatalogError(f"attack module {path} has no run(ctx, **params)")
    return module
