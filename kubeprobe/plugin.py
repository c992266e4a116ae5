"""The pytest plugin: options, the target and suite fixtures, verdicts as test outcomes, and
the reports: results.json, kubeprobe's own report.html rendered from it, junit.xml (all in
--reports-dir, written atomically: kubeprobe.reportfiles), and pytest-html's report with
kubeprobe's columns and evidence when `--html FILE` asks for it.

Exit codes: 0 every control held (PASS, or SKIP/NOT-VERIFIED with a reason), 1 a control
FAILED or could not be judged (ERROR), 2 the suite could not run (bad option, bad target,
malformed catalog, API server gone mid-run), a cleanup failed, or SIGINT/SIGTERM stopped it
(after its cleanups). Every exit 2 prints one `kubeprobe: ...` line: before the run
(pytest_configure, the fixtures) through pytest.exit; mid-run through SuiteAbort; for failed
cleanups and interrupts at the end, in the terminal summary.

Every creation is journalled first (kubeprobe.journal, `<reports-dir>/journal/<run-id>.jsonl`);
a run starts by naming what earlier runs left (kubeprobe.sweep.leftovers).
"""
from __future__ import annotations

import contextlib
import fnmatch
import importlib.util
import math
import os
import re
import sys
import tempfile
from pathlib import Path

import pytest

from kubeprobe import detectors, diff, report, resources, sweep
from kubeprobe.alerts import (TOKEN_PATTERN, TOKEN_RULE, AuditWebhookReceiver,
                              FalcoHttpReceiver)
from kubeprobe.catalog import DEFAULT_CATALOG, CatalogError, load_attack, load_catalog
from kubeprobe.errors import one_line
from kubeprobe.interrupts import InterruptGuard, shielded
from kubeprobe.journal import ClusterJournal, Journal
from kubeprobe.kube import Kube, TargetError
from kubeprobe.outcome import Verdict
from kubeprobe.provenance import sha256_of
from kubeprobe.reference import DOCS_CONTROLS
from kubeprobe.reportfiles import REPORT, ReportFiles
from kubeprobe.suite import Suite, SuiteAbort, new_run_id
from kubeprobe.targets import KIND_CONFIGS, TARGET_KINDS, TargetOptions, resolve

SUITES_DIR = resources.SUITES_DIR
RESULT_KEY = pytest.StashKey["object"]()
SUITE_KEY = pytest.StashKey["object"]()
# What makes a run that got going exit 2 at its end (a cleanup or the target's teardown
# failed): reported as one line in the terminal summary.
END_KEY = pytest.StashKey[list]()
ABORTED_KEY = pytest.StashKey[bool]()  # the run ended at once: the API server went away
GUARD_KEY = pytest.StashKey[InterruptGuard]()  # SIGINT/SIGTERM: cleanups first
FILES_KEY = pytest.StashKey[ReportFiles]()     # the run's reports directory
STARTED_KEY = pytest.StashKey[str]()
EXIT_LINE_KEY = pytest.StashKey[str]()   # the `kubeprobe:` line of pytest.exit, for the reports
# pytest-html's report, when --html names kubeprobe's own report.html
PYTEST_HTML_INSTEAD = "pytest-html.html"
BASELINE_KEY = pytest.StashKey[dict]()  # the --baseline results.json, checked before the run
DIFF_KEY = pytest.StashKey[dict]()  # diff, others, the gated exit status (pytest_sessionfinish)
EXIT_CANNOT_RUN = 2


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kubeprobe", "kubeprobe: active Kubernetes security conformance")
    # kubeprobe validates its own options (pytest_configure): a bad value is one line and
    # exit 2, not pytest's usage error (exit 4). Hence no choices= and no type=float here.
    group.addoption("--target", default="auto",
                    help="auto (default): --kubeconfig if given, else kind if usable, else lab; "
                         "or existing, kind, lab")
    group.addoption("--kubeconfig", type=Path, default=None, help="kubeconfig of an existing "
                    "cluster (implies --target existing under auto)")
    group.addoption("--context", default=None, help="kubeconfig context to use")
    group.addoption("--cluster-profile", default="hardened",
                    help="profile of the cluster the suite builds (kind, lab): hardened or weak")
    group.addoption("--k8s-version", default=None, metavar="V",
                    help="Kubernetes version of the cluster the suite builds (lab, kind): a "
                         "supported minor (1.35, 1.36, 1.37) or patch; default: the newest")
    group.addoption("--keep-cluster", action="store_true",
                    help="do not delete the kind cluster / stop the lab at the end")
    group.addoption("--profile", default="default",
                    help="expectation profile from the catalog (default, detection, ...)")
    group.addoption("--catalog", type=Path, default=DEFAULT_CATALOG, help="control catalog")
    group.addoption("--controls", default=None,
                    help="comma-separated control ids or globs, e.g. ETCD-*,KUBELET-01")
    group.addoption("--connect-timeout", default=3.0,
                    help="seconds for every connect (default 3)")
    group.addoption("--read-timeout", default=5.0,
                    help="seconds to wait for an answer (default 5)")
    group.addoption("--intrusive", action="store_true",
                    help="allow intrusive attacks on an existing cluster")
    group.addoption("--run-id", default=None, help="run id stamped on every object "
                    "(default: time + random)")
    group.addoption("--probe-image", default=None,
                    help="image of the pod vantage agent for an existing cluster "
                         "(kind and the lab get a locally built one)")
    group.addoption("--probe-image-pull-secret", default=None, metavar="FILE",
                    help="a docker config.json with the credentials of --probe-image's "
                         "registry (what `docker login` writes; default "
                         "$KUBEPROBE_PROBE_IMAGE_PULL_SECRET): every pod running the probe "
                         "image names a kubernetes.io/dockerconfigjson Secret made from it in "
                         "its namespace (removed at the end of the run)")
    group.addoption("--node-access", default="auto", metavar="auto|direct|pod",
                    help="how planting attacks reach a node: auto (default: the target's own "
                         "access, local on the lab, docker exec on kind; else, with "
                         "--intrusive and a probe image, a privileged pod on the node), "
                         "direct (never a pod), pod (always the privileged pod)")
    group.addoption("--node-access-namespace", default="kube-system", metavar="NS",
                    help="namespace of the privileged node-access pod (default kube-system; "
                         "one the cluster's admission policy lets privileged agents run in)")
    group.addoption("--audit-log", type=Path, default=None,
                    help="an audit log file the runner can read (existing clusters)")
    group.addoption("--falco-receiver", default=None, metavar="HOST:PORT",
                    help="receive Falco http_output/falcosidekick alerts on exactly this "
                         "address (0.0.0.0 must be said)")
    group.addoption("--falco-receiver-token", default=None, metavar="TOKEN",
                    help="the shared token every alert POST must carry (Authorization: Bearer "
                         "or ?token=); default $KUBEPROBE_FALCO_TOKEN, else one made and "
                         "printed for the run")
    group.addoption("--falco-receiver-insecure", action="store_true",
                    help="take alert POSTs without a token (anyone who can reach the receiver "
                         "can forge alerts); said in the report")
    group.addoption("--audit-webhook", default=None, metavar="HOST:PORT",
                    help="receive the API server's audit webhook (--audit-webhook-config-file) "
                         "on exactly this address (0.0.0.0 must be said); the audit alert "
                         "source instead of a log file")
    group.addoption("--audit-webhook-token", default=None, metavar="TOKEN",
                    help="the shared token every audit POST must carry (the webhook "
                         "kubeconfig's user token: Authorization: Bearer); default "
                         "$KUBEPROBE_AUDIT_WEBHOOK_TOKEN, else one made and printed for the run")
    group.addoption("--audit-webhook-cert", type=Path, default=None, metavar="FILE",
                    help="the audit webhook receiver's TLS certificate (PEM, chain first), "
                         "with --audit-webhook-key; default: a per-run CA and certificate for "
                         "the bind address, the CA written to <reports-dir>/"
                         "audit-webhook-ca.pem")
    group.addoption("--audit-webhook-key", type=Path, default=None, metavar="FILE",
                    help="the private key (PEM, unencrypted) of --audit-webhook-cert")
    group.addoption("--audit-webhook-insecure", action="store_true",
                    help="plain HTTP instead of TLS (for a TLS-terminating proxy in front, "
                         "which forwards the API server's token): with a token "
                         "(--audit-webhook-token, $KUBEPROBE_AUDIT_WEBHOOK_TOKEN) it is still "
                         "required, without one none is (anyone who can reach the receiver "
                         "can forge audit events); said in the report")
    group.addoption("--falco-namespace", default="falco",
                    help="namespace of the Falco pods whose logs carry alerts")
    group.addoption("--require-alerts", action="store_true",
                    help="NOT-VERIFIED fails the run (exit 1): for pipelines that must prove "
                         "detection, not only prevention")
    group.addoption("--no-falco", action="store_true",
                    help="do not install Falco on the hardened kind cluster")
    group.addoption("--kind-node-image", default="auto", metavar="auto|local|upstream|REF",
                    help="kind's node image: auto = kind v0.33.0's kindest/node where the engine "
                         "has or can pull it, else kubeprobe's offline image of the lab's "
                         "Kubernetes (`kubeprobe kind image`); local = always the offline one")
    group.addoption("--kind-workers", default=0, type=int, metavar="N",
                    help="add N worker nodes to the kind cluster (multi-node run)")
    group.addoption("--alert-timeout", default=15.0,
                    help="seconds to wait for an expected alert (default 15)")
    group.addoption("--parallelism", default=8,
                    help="controls attacked at once, and 4x as many endpoints of one control "
                         "(default 8; 1: one after another)")
    group.addoption("--deadline", default=1800.0,
                    help="seconds the whole run may take once the target answers (default "
                         "1800); a control still running then is an ERROR")
    group.addoption("--namespaces", default="*",
                    help="workload namespaces (comma-separated globs) where admission attacks "
                         "also send their dry-run pair; 'none' for the run's own only "
                         "(default: every namespace but kube-system, kube-public, "
                         "kube-node-lease, the Falco namespace and kubeprobe's)")
    group.addoption("--trusted-image", default=None,
                    help="a digest-pinned image the cluster's image policy admits, for the "
                         "positive twins of admission attacks (default: "
                         "registry.k8s.io/pause@sha256:...)")
    # The supply-chain controls (REGISTRY-*) on an existing cluster (kubeprobe.supplychain);
    # the lab names its own registry and images.
    group.addoption("--registry-image", default=None, metavar="REF",
                    help="an image in the private registry: its manifest is requested without "
                         "credentials (REGISTRY-01)")
    group.addoption("--registry-ca", type=Path, default=None, metavar="FILE",
                    help="CA bundle for the private registry's TLS (default: system trust)")
    group.addoption("--registry-exempt-namespaces", default=None, metavar="NS,...",
                    help="namespaces the cluster's image-signature admission leaves alone by "
                         "design (its own, the detector's): REGISTRY-02..05 do not sweep them, "
                         "said in their evidence (the lab names its own)")
    for option, (_, what) in _supply_chain_options().items():
        group.addoption(option, default=None, metavar="REF",
                        help=f"{what} (REGISTRY-02..05; without it the control SKIPs)")
    group.addoption("--reports-dir", type=Path, default=resources.DEFAULT_REPORTS,
                    help="where report.html, results.json and junit.xml go (default: the "
                         "checkout's reports/, installed: ./reports)")
    group.addoption("--baseline", type=Path, default=None, metavar="OLD/results.json",
                    help="an earlier run's results.json: regressions, fixes, added, removed "
                         "and authority changes come first in the summary and in results.json "
                         "(baseline_diff)")
    group.addoption("--fail-on", default="failure", metavar="failure|regression",
                    help="failure (default): exit 1 on any FAIL/ERROR; regression: exit 1 only "
                         "on a regression against --baseline (exit 2 stays 2)")


def _arg_path(config: pytest.Config, arg: str) -> Path:
    """The file or directory a command-line argument names (with --pyargs, a module such as
    kubeprobe.suites)."""
    name = arg.split("::")[0]
    if config.getoption("pyargs", False):
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            return Path(list(spec.submodule_search_locations)[0]).resolve()
        if spec is not None and spec.origin:
            return Path(spec.origin).resolve()
    return Path(name).resolve()


def _runs_suites(config: pytest.Config) -> bool:
    for arg in config.args:
        path = _arg_path(config, arg)
        if path == SUITES_DIR or SUITES_DIR in path.parents:
            return True
    return False


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab: needs root and the lab binaries")
    if not _runs_suites(config):
        return
    config.stash[STARTED_KEY] = report.now()
    try:
        _configure_suite(config)
    except pytest.exit.Exception as exc:   # refused before the run: results.json says why
        _record_refusal(config, str(exc.msg))
        raise


def _configure_suite(config: pytest.Config) -> None:
    _validate_options(config)
    reports = _writable_reports_dir(config.getoption("reports_dir"))
    _audit_webhook_tls(config, reports)
    files = ReportFiles(reports)
    _route_pytest_html(config, reports)
    if getattr(config.option, "xmlpath", None) is None:   # --junitxml: the user's own file
        config.option.xmlpath = files.claim_junit()
    config.stash[FILES_KEY] = files
    _load_controls(config)
    config.pluginmanager.register(_ExitLine(config), "kubeprobe-exit-line")
    guard = InterruptGuard(say=lambda line: _say(config, line))
    if guard.install():
        config.stash[GUARD_KEY] = guard


def _route_pytest_html(config: pytest.Config, reports: Path) -> None:
    """kubeprobe's report is always <reports-dir>/report.html; pytest-html writes only where
    --html says, and goes next to it when --html names that very file."""
    htmlpath = getattr(config.option, "htmlpath", None)
    if htmlpath is None:
        return
    if Path(htmlpath).resolve() == (reports / REPORT).resolve():
        config.option.htmlpath = str(reports / PYTEST_HTML_INSTEAD)
        _say(config, f"kubeprobe: {reports / REPORT} is kubeprobe's own report; pytest-html's "
                     f"goes to {config.option.htmlpath} instead")


class _ExitLine:
    """Keeps the message of the pytest.exit that ends a run (its one `kubeprobe:` line) for
    the reports: on top of report.html, `error` in results.json."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_keyboard_interrupt(self, excinfo) -> None:
        if isinstance(excinfo.value, pytest.exit.Exception):
            self.config.stash[EXIT_LINE_KEY] = str(excinfo.value.msg)


def _record_refusal(config: pytest.Config, line: str) -> None:
    """An option refused before anything ran: results.json says so, when the reports
    directory can be written at all (report.html and junit.xml are left alone)."""
    with contextlib.suppress(OSError):
        directory = Path(config.getoption("reports_dir"))
        directory.mkdir(parents=True, exist_ok=True)
        files = config.stash.get(FILES_KEY, None) or ReportFiles(directory)
        files.cannot_start(report.cannot_start_document(
            _run_facts(config, line), _known_environment(config), {}))


def pytest_unconfigure(config: pytest.Config) -> None:
    guard = config.stash.get(GUARD_KEY, None)
    if guard is not None:
        guard.restore()


def _cannot_run(message: str) -> None:
    pytest.exit(f"kubeprobe: {message}", returncode=EXIT_CANNOT_RUN)


def _exit_2_at_the_end(config: pytest.Config, message: str) -> None:
    """For what goes wrong after the run started (teardown): raising there would skip other
    teardown steps, so it is recorded, and pytest_sessionfinish makes the exit code 2."""
    config.stash.setdefault(END_KEY, []).append(message)


def _say(config: pytest.Config, line: str) -> None:
    """One line on the terminal now, even from inside a fixture or a signal handler (output
    capture suspended)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        print(line, file=sys.stderr, flush=True)
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.ensure_newline()
        reporter.write_line(line, yellow=True)


# A run id goes into namespace, pod and kind cluster names and label values: a DNS-1123
# label, short enough that `kp-<longest prefix>-<run id>-<nonce>` still fits in 63.
RUN_ID = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
RUN_ID_MAX = 26
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _seconds(config: pytest.Config, name: str) -> None:
    option = "--" + name.replace("_", "-")
    raw = getattr(config.option, name)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        _cannot_run(f"{option} {raw!r}: must be a number of seconds greater than 0")
    setattr(config.option, name, value)


def _receiver_address(flag: str, raw: str, example_port: int) -> None:
    host, sep, port = raw.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or any(
            ch in host for ch in " /") or (":" in host and not host.startswith("[")):
        _cannot_run(f"{flag} {raw!r}: expected HOST:PORT (e.g. 0.0.0.0:{example_port}), "
                    f"port 1-65535")
    if not host.strip("[]"):
        _cannot_run(f"{flag} {raw!r}: name the address to bind (e.g. "
                    f"127.0.0.1:{port}, or 0.0.0.0:{port} for every interface)")


FALCO_TOKEN_ENV = "KUBEPROBE_FALCO_TOKEN"
AUDIT_WEBHOOK_TOKEN_ENV = "KUBEPROBE_AUDIT_WEBHOOK_TOKEN"
# The alert receivers' options: (address option, its token, insecure, $ENV, what it is).
RECEIVERS = (("falco_receiver", "--falco-receiver", FALCO_TOKEN_ENV, "the Falco receiver", 2801),
             ("audit_webhook", "--audit-webhook", AUDIT_WEBHOOK_TOKEN_ENV,
              "the audit webhook receiver", 2802))


def _receiver_token(config: pytest.Config, dest: str, flag: str, env: str, what: str) -> None:
    """Resolve a receiver's token: the option, else $ENV, else None (one is made when the
    receiver starts). A bad token is named by where it came from, never shown."""
    opt = config.option
    token_dest, insecure_dest = f"{dest}_token", f"{dest}_insecure"
    given = getattr(opt, token_dest)
    where = f"{flag}-token"
    if given is None and os.environ.get(env):
        given, where = os.environ[env], f"${env}"
    if getattr(opt, dest) is None:
        if getattr(opt, token_dest) is not None or getattr(opt, insecure_dest):
            option = (f"{flag}-token" if getattr(opt, token_dest) is not None
                      else f"{flag}-insecure")
            _cannot_run(f"{option} without {flag}")
        setattr(opt, token_dest, None)
        return
    # The audit webhook's -insecure is plain HTTP, where a given token is still required (a
    # TLS proxy in front); the Falco receiver's is "no token".
    if getattr(opt, insecure_dest) and given is not None and dest != "audit_webhook":
        _cannot_run(f"{flag}-insecure and a token ({where}) exclude each other")
    if given is not None and not TOKEN_PATTERN.match(given):
        _cannot_run(f"{what}'s token ({where}) must be {TOKEN_RULE}")
    setattr(opt, token_dest, given)


AUDIT_TLS_KEY = pytest.StashKey[object]()  # the audit webhook receiver's ssl.SSLContext
AUDIT_WEBHOOK_CA = "audit-webhook-ca.pem"  # in --reports-dir: the per-run CA (PEM)


def _audit_webhook_certificate(config: pytest.Config) -> None:
    """--audit-webhook-cert/--audit-webhook-key: both or neither, only with --audit-webhook,
    not with --audit-webhook-insecure (plain HTTP); loaded now, so an unreadable file or a
    key that is not the certificate's is one line and exit 2 before anything runs."""
    opt = config.option
    cert, key = opt.audit_webhook_cert, opt.audit_webhook_key
    if cert is None and key is None:
        return
    given = "--audit-webhook-cert" if cert is not None else "--audit-webhook-key"
    if opt.audit_webhook is None:
        _cannot_run(f"{given} without --audit-webhook")
    if opt.audit_webhook_insecure:
        _cannot_run(f"{given} and --audit-webhook-insecure (plain HTTP) exclude each other")
    if cert is None or key is None:
        _cannot_run("--audit-webhook-cert and --audit-webhook-key go together (the receiver's "
                    "certificate and its private key)")
    from kubeprobe.pki import load_server_context
    try:
        config.stash[AUDIT_TLS_KEY] = load_server_context(cert, key)
    except ValueError as exc:
        _cannot_run(f"--audit-webhook-cert/--audit-webhook-key: {exc}")


def _local_names() -> tuple[str, ...]:
    """The names and addresses a wildcard-bound receiver may be reached at: for the per-run
    certificate's SANs (the operator can give their own certificate instead)."""
    import socket
    names = ["localhost", "127.0.0.1", "::1"]
    hostname = socket.gethostname()
    for name in (hostname, socket.getfqdn()):
        if name and name not in names:
            names.append(name)
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(hostname, None):
            address = info[4][0].split("%")[0]
            if address not in names:
                names.append(address)
    for family, probe in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        # The address this host routes from (a UDP connect sends nothing).
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((probe, 9))
            address = sock.getsockname()[0]
            if address not in names:
                names.append(address)
    return tuple(names)


def _audit_webhook_tls(config: pytest.Config, reports: Path) -> None:
    """Without the operator's certificate, a per-run CA and a server certificate for the bind
    address; the CA goes to <reports-dir>/audit-webhook-ca.pem, and one line says so."""
    opt = config.option
    if opt.audit_webhook is None or opt.audit_webhook_insecure or AUDIT_TLS_KEY in config.stash:
        return
    from kubeprobe.pki import tls_server
    host = detectors._receiver_address(opt.audit_webhook)[0]
    hosts = _local_names() if host in ("0.0.0.0", "::") else (host,)
    ca, server = tls_server(hosts, "kubeprobe-audit-webhook")
    path = reports / AUDIT_WEBHOOK_CA
    try:
        path.write_bytes(ca.cert_pem)
    except OSError as exc:
        _cannot_run(f"--reports-dir {reports}: cannot write {AUDIT_WEBHOOK_CA} "
                    f"({exc.strerror or type(exc).__name__})")
    config.stash[AUDIT_TLS_KEY] = server.server_context()
    _say(config, f"kubeprobe: the audit webhook receiver speaks TLS with a certificate made for "
                 f"this run (for {', '.join(hosts)}); its CA is {path}: put it in the API "
                 f"server's webhook kubeconfig as certificate-authority-data (base64 of the "
                 f"file), or give --audit-webhook-cert/--audit-webhook-key")


def _supply_chain_options() -> dict[str, tuple[str, str]]:
    """option -> (image kind, what it is), from kubeprobe.supplychain."""
    from kubeprobe.supplychain import IMAGE_OPTIONS
    return {option: (kind, what) for kind, (option, what) in IMAGE_OPTIONS.items()}


def _supply_chain_images(config: pytest.Config) -> dict[str, str | None]:
    return {kind: config.getoption(option.lstrip("-").replace("-", "_"))
            for option, (kind, _) in _supply_chain_options().items()}


def _supply_chain(config: pytest.Config, target):
    """Options name the registry and images if any is given; else the lab's own, if any."""
    from kubeprobe import supplychain
    images = _supply_chain_images(config)
    if config.getoption("registry_image") or any(images.values()):
        return supplychain.from_options(config.getoption("registry_image"),
                                        config.getoption("registry_ca"), images,
                                        _registry_exempt(config.getoption(
                                            "registry_exempt_namespaces")))
    return supplychain.from_lab(getattr(target, "registry", None))


def _registry_exempt(option: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in (option or "").split(",") if n.strip())


PULL_SECRET_KEY = pytest.StashKey[bytes]()  # --probe-image-pull-secret's content, checked


def _probe_image_pull_secret(config: pytest.Config) -> None:
    """--probe-image-pull-secret FILE (else $KUBEPROBE_PROBE_IMAGE_PULL_SECRET): a docker
    config.json with `auths`, read now (one line and exit 2 when it is not; its content is
    never shown) and kept for the run."""
    from kubeprobe.workloads import PULL_SECRET_ENV, read_docker_config
    path, where = config.option.probe_image_pull_secret, "--probe-image-pull-secret"
    if path is None and os.environ.get(PULL_SECRET_ENV):
        path, where = os.environ[PULL_SECRET_ENV], f"${PULL_SECRET_ENV}"
    if path is None:
        return
    content, why = read_docker_config(path)
    if content is None:
        _cannot_run(f"{where} {path}: {why}")
    config.option.probe_image_pull_secret = path
    config.stash[PULL_SECRET_KEY] = content


def _validate_options(config: pytest.Config) -> None:
    """kubeprobe's own options, checked before anything is built or touched: one line and
    exit 2 for a bad value (pytest would say exit 4, with its usage text)."""
    opt = config.option
    if opt.target not in TARGET_KINDS:
        _cannot_run(f"--target {opt.target!r}: must be one of {', '.join(TARGET_KINDS)}")
    if opt.cluster_profile not in KIND_CONFIGS:
        _cannot_run(f"--cluster-profile {opt.cluster_profile!r}: must be one of "
                    f"{', '.join(sorted(KIND_CONFIGS))}")
    if opt.k8s_version is not None:
        from kubeprobe.lab.build import resolve_version
        try:
            opt.k8s_version = resolve_version(opt.k8s_version)
        except ValueError as exc:
            _cannot_run(f"--k8s-version: {exc}")
    for name in ("connect_timeout", "read_timeout", "alert_timeout", "deadline"):
        _seconds(config, name)
    if not str(opt.parallelism).isdigit() or not 1 <= int(opt.parallelism) <= 64:
        _cannot_run(f"--parallelism {opt.parallelism!r}: must be a whole number from 1 to 64")
    opt.parallelism = int(opt.parallelism)
    for dest, flag, env, what, example_port in RECEIVERS:
        if getattr(opt, dest) is not None:
            _receiver_address(flag, getattr(opt, dest), example_port)
        _receiver_token(config, dest, flag, env, what)
    _audit_webhook_certificate(config)
    if opt.audit_webhook is not None and opt.audit_log is not None:
        _cannot_run("--audit-log and --audit-webhook: give one audit source (the webhook "
                    "receiver, or a log file the runner can read)")
    _probe_image_pull_secret(config)
    if opt.node_access not in ("auto", "direct", "pod"):
        _cannot_run(f"--node-access {opt.node_access!r}: one of auto, direct, pod")
    if not DNS_LABEL.match(opt.node_access_namespace or ""):
        _cannot_run(f"--node-access-namespace {opt.node_access_namespace!r}: not a namespace "
                    "name")
    if not DNS_LABEL.match(opt.falco_namespace or ""):
        _cannot_run(f"--falco-namespace {opt.falco_namespace!r}: not a namespace name "
                    f"(lowercase letters, digits and '-')")
    for name in _registry_exempt(opt.registry_exempt_namespaces):
        if not DNS_LABEL.match(name):
            _cannot_run(f"--registry-exempt-namespaces {opt.registry_exempt_namespaces!r}: "
                        f"{name!r} is not a namespace name")
    from kubeprobe.supplychain import check_options
    bad = check_options(opt.registry_image, opt.registry_ca, _supply_chain_images(config))
    if bad:
        _cannot_run(bad)
    if opt.fail_on not in diff.FAIL_ON:
        _cannot_run(f"--fail-on {opt.fail_on!r}: must be one of {', '.join(diff.FAIL_ON)}")
    if opt.baseline is not None:
        try:
            config.stash[BASELINE_KEY] = diff.load_results(opt.baseline)
        except diff.ResultsError as exc:
            _cannot_run(f"--baseline {exc}")
    if opt.run_id is not None and not (RUN_ID.match(opt.run_id)
                                       and len(opt.run_id) <= RUN_ID_MAX):
        _cannot_run(f"--run-id {opt.run_id!r}: must be DNS-safe (lowercase letters, digits "
                    f"and '-', starting and ending alphanumeric) and at most {RUN_ID_MAX} "
                    f"characters: it goes into namespace and object names")


def _writable_reports_dir(reports: Path) -> Path:
    try:
        reports.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=reports):
            pass
    except OSError as exc:
        _cannot_run(f"--reports-dir {reports}: cannot write there "
                    f"({exc.strerror or type(exc).__name__})")
    return reports


def _load_controls(config: pytest.Config) -> None:
    """Validate the catalog and the selection before anything is collected or created."""
    try:
        catalog = load_catalog(config.getoption("catalog"))
    except CatalogError as exc:
        _cannot_run(str(exc))
    selection = config.getoption("controls")
    controls = list(catalog.controls)
    if selection:
        patterns = [p.strip() for p in selection.split(",") if p.strip()]
        controls = [c for c in controls if any(fnmatch.fnmatch(c.id, p) for p in patterns)]
        if not controls:
            _cannot_run(f"--controls {selection!r} matches no control in {catalog.path}")
    profile = config.getoption("profile")
    if profile not in catalog.profiles:
        _cannot_run(f"--profile {profile!r} is not in the catalog "
                    f"(profiles: {', '.join(catalog.profiles)})")
    for control in controls:  # an attack that cannot even load is a malformed catalog
        try:
            load_attack(control.attack, catalog.attacks_dir)
        except CatalogError as exc:
            _cannot_run(f"malformed catalog {catalog.path}: control {control.id}: {exc}")
        except Exception as exc:  # noqa: BLE001 - the module's own error, on one line
            _cannot_run(f"malformed catalog {catalog.path}: control {control.id}: attack "
                        f"module {control.attack} does not load: {one_line(exc)}")
    config.stash[SUITE_KEY] = {"catalog": catalog, "controls": controls}


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                   items: list[pytest.Item]) -> None:
    """Long-running controls (an ageing process) are judged last: they start first."""
    items.sort(key=lambda item: bool(getattr(_control_of(item), "long_running", False)))


def pytest_collection_finish(session: pytest.Session) -> None:
    """The controls pytest will really run (after -k and --controls), for the scheduler."""
    state = session.config.stash.get(SUITE_KEY, None)
    if state is not None:
        state["scheduled"] = [c for c in map(_control_of, session.items) if c is not None]


def _control_of(item: pytest.Item):
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("kubeprobe_control") if callspec else None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kubeprobe_control" not in metafunc.fixturenames:
        return
    state = metafunc.config.stash.get(SUITE_KEY, None)
    if state is None:
        _cannot_run("the suite's controls were not loaded (run `pytest suites/`)")
    controls = state["controls"]
    metafunc.parametrize("kubeprobe_control", controls, ids=[c.id for c in controls])


@pytest.fixture(scope="session")
def kubeprobe_target(request: pytest.FixtureRequest):
    config = request.config
    run_id = config.getoption("run_id") or new_run_id()
    opts = TargetOptions(target=config.getoption("target"),
                         kubeconfig=config.getoption("kubeconfig"),
                         context=config.getoption("context"),
                         cluster_profile=config.getoption("cluster_profile"),
                         k8s_version=config.getoption("k8s_version"),
                         keep_cluster=config.getoption("keep_cluster"), run_id=run_id,
                         extra_images=_agent_image(config),
                         install_falco=not config.getoption("no_falco"),
                         kind_node_image=config.getoption("kind_node_image"),
                         kind_workers=config.getoption("kind_workers"))
    try:
        # A signal while the target comes up is held: the teardown needs a whole target.
        with shielded(config.stash.get(GUARD_KEY, None)):
            target = resolve(opts)
    except TargetError as exc:
        _cannot_run(str(exc))
    target.run_id = run_id
    yield target
    with shielded(config.stash.get(GUARD_KEY, None)):
        errors = target.close()
    if errors:
        _exit_2_at_the_end(config, "target teardown failed: " + "; ".join(errors))


@pytest.fixture(scope="session")
def kubeprobe_suite(request: pytest.FixtureRequest, kubeprobe_target):
    config = request.config
    guard = config.stash.get(GUARD_KEY, None)
    if guard is not None:
        guard.check()   # a signal held while the target came up
    try:
        kube = Kube.connect(kubeprobe_target.kubeconfig, kubeprobe_target.context,
                            config.getoption("connect_timeout"))
    except TargetError as exc:
        _cannot_run(str(exc))
    suite = Suite(catalog=config.stash[SUITE_KEY]["catalog"], target=kubeprobe_target,
                  kube=kube, profile=config.getoption("profile"),
                  run_id=kubeprobe_target.run_id,
                  connect_timeout=config.getoption("connect_timeout"),
                  read_timeout=config.getoption("read_timeout"),
                  intrusive=config.getoption("intrusive"),
                  pod_transport_factory=_pod_transport_factory(),
                  probe_image=_probe_image(config, kubeprobe_target),
                  probe_image_pull_secret=_pull_secret(config, kubeprobe_target),
                  node_access=config.getoption("node_access"),
                  node_access_namespace=config.getoption("node_access_namespace"),
                  falco_namespace=config.getoption("falco_namespace"),
                  namespace_patterns=_namespace_patterns(config.getoption("namespaces")),
                  trusted_image=config.getoption("trusted_image"),
                  supply_chain=_supply_chain(config, kubeprobe_target),
                  parallelism=config.getoption("parallelism"),
                  run_deadline_s=config.getoption("deadline"), interrupts=guard)
    suite.journal = _start_journal(config, suite, kubeprobe_target)
    config.stash[SUITE_KEY]["suite"] = suite
    for line in sweep.leftovers(kube, config.getoption("reports_dir"), suite.run_id,
                                kubeprobe_target.kubeconfig, kubeprobe_target.context):
        _say(config, line)
    try:
        sources, failed = detectors.start_sources(
            kubeprobe_target, kube, config.getoption("audit_log"),
            config.getoption("falco_receiver"), config.getoption("falco_namespace"),
            config.getoption("falco_receiver_token"),
            config.getoption("falco_receiver_insecure"),
            audit_webhook=config.getoption("audit_webhook"),
            audit_webhook_token=config.getoption("audit_webhook_token"),
            audit_webhook_insecure=config.getoption("audit_webhook_insecure"),
            audit_webhook_tls=config.stash.get(AUDIT_TLS_KEY, None))
        for source in sources.values():
            suite.defer(f"stop the {source.name} alert source", source.stop)
        if isinstance(sources.get("falco"), FalcoHttpReceiver):
            _say_receiver(config, sources["falco"])
        if isinstance(sources.get("audit"), AuditWebhookReceiver):
            _say_audit_webhook(config, sources["audit"])
        for name, why in failed.items():
            _say(config, f"kubeprobe: the {name} alert source cannot start ({why}); going on "
                         f"without it: controls expecting {name} alerts say NOT-VERIFIED")
        suite.alert_sources, suite.alert_sources_unavailable = sources, failed
        suite.alert_deadline_s = config.getoption("alert_timeout")
        report.add_environment(config, suite)
    except Exception:
        if kube.alive():
            raise
        kube.mark_gone()
        errors = suite.close()
        suite.journal.end()
        _cannot_run(f"API server {kube.server_url} stopped answering mid-run (during setup: "
                    f"starting the alert sources)" + (f"; cleanup failed: {'; '.join(errors)}"
                                                      if errors else ""))
    suite.start(config.stash[SUITE_KEY].get("scheduled", []))
    yield suite
    suite.stop()
    errors = suite.close()
    suite.journal.end(interrupted=guard.received if guard is not None else None)
    if errors:
        _exit_2_at_the_end(config, "cleanup failed, objects may be left in the cluster: "
                                   + "; ".join(errors))


def _start_journal(config: pytest.Config, suite: Suite, target) -> Journal:
    """The run's journal (kubeprobe.journal), begun before anything is created."""
    try:
        journal = Journal.start(config.getoption("reports_dir"), suite.run_id,
                                kubeconfig=target.kubeconfig, context=target.context,
                                target=target.kind, description=target.description)
    except OSError as exc:
        _cannot_run(f"--reports-dir {config.getoption('reports_dir')}: cannot write the "
                    f"run's journal ({exc.strerror or type(exc).__name__})")
    journal.cluster = ClusterJournal(suite.kube, lambda: suite.namespace.ensure(), suite.run_id)
    journal.guard = suite.interrupts
    return journal


def _say_receiver(config: pytest.Config, receiver: FalcoHttpReceiver) -> None:
    """How to point Falco at a receiver whose token this run made; a warning for an insecure
    one. A token that was given is never printed."""
    if receiver.token is None:
        _say(config, f"kubeprobe: the Falco receiver on {receiver.address} takes alerts "
                     "WITHOUT a token (--falco-receiver-insecure): anyone who can reach it can "
                     "forge an alert and pass a control")
        return
    if not receiver.token_generated:
        return
    where = receiver.address
    if receiver.host in ("0.0.0.0", "::"):
        where = f"<this runner's address>:{receiver.port}"
    token = receiver.token
    _say(config, f"kubeprobe: the Falco receiver on {receiver.address} takes only POSTs with "
                 f"a shared token; none was given (--falco-receiver-token or "
                 f"${FALCO_TOKEN_ENV}), so this run's token is {token}: Falco falco.yaml "
                 f"http_output: {{enabled: true, url: \"http://{where}/?token={token}\"}} "
                 f"(json_output: true); falcosidekick: "
                 f"WEBHOOK_ADDRESS=http://{where}/ WEBHOOK_CUSTOMHEADERS='Authorization:Bearer "
                 f"{token}'")


def _say_audit_webhook(config: pytest.Config, receiver: AuditWebhookReceiver) -> None:
    """How to point the API server's audit webhook at a receiver whose token this run made;
    a warning for an insecure one. A token that was given is never printed."""
    if receiver.token is None:
        _say(config, f"kubeprobe: the audit webhook receiver on http://{receiver.address} takes "
                     "audit events over plain HTTP WITHOUT a token (--audit-webhook-insecure): "
                     "anyone who can reach it can forge an audit event and pass a control")
        return
    if receiver.plain_http:
        _say(config, f"kubeprobe: the audit webhook receiver on http://{receiver.address} "
                     f"speaks plain HTTP (--audit-webhook-insecure): the token travels in "
                     f"clear; put a TLS-terminating proxy in front (the API server sends its "
                     f"token only over TLS)")
    if not receiver.token_generated:
        return
    where = receiver.address
    if receiver.host in ("0.0.0.0", "::"):
        where = f"<this runner's address>:{receiver.port}"
    _say(config, f"kubeprobe: the audit webhook receiver on {receiver.address} takes only POSTs "
                 f"with a shared token; none was given (--audit-webhook-token or "
                 f"${AUDIT_WEBHOOK_TOKEN_ENV}), so this run's token is {receiver.token}: the API "
                 f"server's --audit-webhook-config-file kubeconfig: cluster server "
                 f"{receiver.scheme}://{where}/, user token {receiver.token}")


def _namespace_patterns(option: str) -> tuple[str, ...]:
    if option.strip().lower() == "none":
        return ()
    return tuple(p.strip() for p in option.split(",") if p.strip())


def _agent_image(config: pytest.Config) -> tuple:
    """The pod vantage agent's image for a cluster the suite builds or reuses locally; none
    (and pod-vantage controls SKIP with the reason) when Go is missing here."""
    if config.getoption("probe_image") or config.getoption("kubeconfig"):
        return ()
    try:
        from kubeprobe.agent import build_agent_image
        return (build_agent_image(),)
    except (OSError, RuntimeError):
        return ()


def _probe_image(config: pytest.Config, target) -> str | None:
    from kubeprobe.agent import AGENT_REPOSITORY, agent_image_ref
    if config.getoption("probe_image"):
        return config.getoption("probe_image")
    pinned = [r for r in target.images if r.startswith(AGENT_REPOSITORY + "@sha256:")]
    tagged = [r for r in target.images if r.endswith(agent_image_ref().split("/", 1)[1])]
    return (pinned or tagged or [None])[0]


def _pull_secret(config: pytest.Config, target):
    """The run's ProbeImagePullSecret from the checked --probe-image-pull-secret, or None."""
    content = config.stash.get(PULL_SECRET_KEY, None)
    if content is None:
        return None
    from kubeprobe.workloads import ProbeImagePullSecret
    return ProbeImagePullSecret(content, config.option.probe_image_pull_secret, target.run_id)


def _pod_transport_factory():
    from kubeprobe.agent import pod_transport_for_suite
    return pod_transport_for_suite


def enforce(suite: Suite, control, item: pytest.Item) -> None:
    """Run the control and turn its verdict into the test's outcome."""
    suite.current_control = control.id
    try:
        result = suite.result_of(control)
    except SuiteAbort as exc:
        suite.stop()
        item.config.stash[ABORTED_KEY] = True  # its line names what cleanup left behind
        _cannot_run(str(exc))
    item.stash[RESULT_KEY] = result
    item.user_properties.extend([("control", control.id), ("verdict", result.verdict.value),
                                 ("expected", result.expected.value),
                                 ("observed", result.observed)])
    what = verdict_outcome(result.verdict, item.config.getoption("require_alerts"))
    if what == "skip":
        pytest.skip(f"{result.verdict.value}: {result.reason}")
    if what == "fail":
        pytest.fail(f"{result.verdict.value}: {result.reason}", pytrace=False)


def verdict_outcome(verdict: Verdict, require_alerts: bool = False) -> str:
    """pass | skip | fail for a verdict. NOT-VERIFIED is never a pass; with
    --require-alerts it is a failure."""
    if verdict is Verdict.PASS:
        return "pass"
    if verdict is Verdict.SKIP or (verdict is Verdict.NOT_VERIFIED and not require_alerts):
        return "skip"
    return "fail"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    rep = outcome.get_result()
    result = item.stash.get(RESULT_KEY, None)
    if result is not None and rep.when == "call":
        rep.kubeprobe = result.to_json()
        report.attach_extras(rep, result)


def _end_problems(config: pytest.Config) -> list[str]:
    """Why a run that went through must still exit 2: failed per-control cleanups (already
    named in the line of a run that aborted), then the run-wide cleanup and the target's
    teardown."""
    state = config.stash.get(SUITE_KEY, None) or {}
    problems = []
    suite = state.get("suite")
    aborted = config.stash.get(ABORTED_KEY, False)
    guard = config.stash.get(GUARD_KEY, None)
    if guard is not None and guard.received:
        during = f" during {suite.current_control}" if suite and suite.current_control else ""
        problems.append(f"interrupted by {guard.received}{during}; "
                        + ("the run's cleanups ran first" if suite is not None else
                           "nothing had been created yet"))
    if suite is not None and suite.cleanup_failures and not aborted:
        problems.append("cleanup failed, objects may be left in the cluster: "
                        + "; ".join(suite.cleanup_failures))
    problems += config.stash.get(END_KEY, [])
    journal = suite.journal if suite is not None else None
    if journal is not None and journal.pending and not aborted:  # (the abort line says it)
        problems.append(f"{len(journal.pending)} journal record(s) not undone; remove what is "
                        "left with: " + sweep.sweep_command(suite.run_id,
                                                            config.getoption("reports_dir")))
    elif problems and journal is not None and guard is not None and guard.received:
        problems.append("nothing is left")
    return problems


@pytest.hookimpl(trylast=True)  # after the session fixtures' teardown and junitxml's file
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    problems = _end_problems(config)
    if problems:
        session.exitstatus = EXIT_CANNOT_RUN
    files = config.stash.get(FILES_KEY, None)
    if files is None:
        return
    if config.option.collectonly:
        files.drop_junit()
        return
    state = config.stash.get(SUITE_KEY, None) or {}
    suite: Suite | None = state.get("suite")
    facts = _run_facts(config, _exit_line(config, problems))
    if suite is None or (session.exitstatus == EXIT_CANNOT_RUN and not suite.results):
        environment = (report._environment(suite) if suite is not None
                       else _known_environment(config))
        files.cannot_start(report.cannot_start_document(
            facts, environment, state["catalog"].benchmarks if state else {},
            exitstatus=int(session.exitstatus)))
        return
    payload = _with_baseline(session, report.results_document(suite, session.exitstatus, facts))
    files.publish(payload)


def _with_baseline(session: pytest.Session, payload: dict) -> dict:
    """With --baseline: the baseline diff in the document (before the controls), and the
    exit status --fail-on makes of it."""
    config = session.config
    baseline = config.stash.get(BASELINE_KEY, None)
    changes, others = None, []
    if baseline is not None:
        changes = diff.compare(baseline, payload, config.getoption("baseline"))
        others = diff.other_changes(baseline, payload)
        payload = report.with_baseline_diff(payload, changes)
    session.exitstatus = diff.gate(session.exitstatus, config.getoption("fail_on"), changes)
    payload["exit_status"] = int(session.exitstatus)
    config.stash[DIFF_KEY] = {"diff": changes, "others": others,
                              "exit_status": int(session.exitstatus)}
    return payload


def _exit_line(config: pytest.Config, problems: list[str]) -> str | None:
    """The one `kubeprobe:` line the run ends with: pytest.exit's (refused, aborted), else
    the end problems' (cleanup failed, interrupted)."""
    if EXIT_LINE_KEY in config.stash:
        return config.stash[EXIT_LINE_KEY]
    return "kubeprobe: " + "; ".join(problems) if problems else None


def _run_facts(config: pytest.Config, error: str | None) -> report.RunFacts:
    state = config.stash.get(SUITE_KEY, None) or {}
    scheduled = state.get("scheduled")
    return report.RunFacts(started_at=config.stash.get(STARTED_KEY, report.now()),
                           scheduled=len(scheduled) if scheduled is not None else None,
                           error=error, control_reference=_control_reference(config))


def _control_reference(config: pytest.Config) -> str | None:
    """docs/controls.md, which the report's rows link to: relative to a reports directory
    inside the checkout (reports/: `../docs/controls.md`), else its file:// URL."""
    if not DOCS_CONTROLS.is_file():
        return None
    reports = Path(config.getoption("reports_dir")).resolve()
    if resources.IN_CHECKOUT and resources.CHECKOUT in (reports, *reports.parents):
        return Path(os.path.relpath(DOCS_CONTROLS, reports)).as_posix()
    return DOCS_CONTROLS.as_uri()


def _known_environment(config: pytest.Config) -> dict[str, str]:
    """What a run that never reached its target can say about itself."""
    catalog = Path(config.getoption("catalog"))
    return {"Run id": config.getoption("run_id") or "not assigned",
            "Target": f"--target {config.getoption('target')}"
                      + (f" --kubeconfig {config.getoption('kubeconfig')}"
                         if config.getoption("kubeconfig") else ""),
            "Profile": str(config.getoption("profile")), "Catalog": str(catalog),
            "Catalog (sha256)": sha256_of(catalog) or "unreadable"}


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(SUITE_KEY, None)
    if state and "suite" in state:
        report.terminal_summary(terminalreporter, state["suite"],
                                config.stash.get(FILES_KEY, None),
                                config.stash.get(DIFF_KEY, None), config.getoption("fail_on"))
    problems = _end_problems(config)
    if problems:  # one line, whatever the count: exit 2
        terminalreporter.write_line("kubeprobe: " + "; ".join(problems), red=True, bold=True)


# pytest-html hooks (pytest-html is a hard dependency of kubeprobe); optional, so the plugin
# still loads where pytest-html is not (plugin autoloading off: `-p kubeprobe` alone). The
# hooks' argument `report` is pytest-html's; the module is _report here.
_report = report


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_table_header(cells) -> None:
    report.html_header(cells)


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_table_row(report: object, cells) -> None:
    _report.html_row(report, cells)


@pytest.hookimpl(optionalhook=True)
def pytest_html_report_title(report: object) -> None:
    _report.html_title(report)
