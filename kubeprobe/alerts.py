"""Alert sources behind one interface, and the matching of an alert to one attack.

An attack carries a nonce (command line, object name, request URI). An alert matches an
attack when its source and rule agree, every field in the matcher agrees (exact or fnmatch
glob), the nonce occurs in the output or a field value, and it happened after the attack
started. Nothing is cleared between attacks: concurrent attacks each wait for their own
alert (parallel-safe). Waiting is event-driven (a Condition notified on every ingested alert)
with a deadline.

Sources:
  AuditLogSource       the API server's audit log file (audit.k8s.io/v1 Event per line)
  AuditWebhookReceiver the API server's audit webhook backend (POSTed EventList)
  FalcoHttpReceiver    Falco `http_output` / falcosidekick POSTs (one JSON alert each),
                       accepted only with the shared token (see _JsonPostServer)
  LineSource           Falco alerts or audit events from any line stream (pod logs, tail -F)
  MissingSource        the cluster has no such trail at all: every wait fails at once, saying why

Falco cannot run on these machines (no driver, no package); its alert shape below follows
Falco's documented JSON output: time (RFC 3339, ns), rule, priority, source, hostname, output,
output_fields, tags.
"""
from __future__ import annotations

import fnmatch
import hmac
import json
import re
import secrets
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol
from urllib.parse import parse_qs, urlsplit

SOURCES = ("falco", "audit")
WINDOW_LIMIT = 20  # alerts kept as evidence when nothing matched


def parse_time(value: str) -> datetime:
    """RFC 3339 with up to nanoseconds (Falco) or microseconds (audit)."""
    text = value.replace("Z", "+00:00")
    if "." in text:
        head, rest = text.split(".", 1)
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits):]
        text = f"{head}.{digits[:6]}{zone}"
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"user": {"username": "x"}} -> {"user.username": "x"}; lists become comma-joined."""
    flat: dict[str, Any] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}{key}."))
    elif isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        flat[prefix[:-1]] = ",".join(str(v) for v in value)
    else:
        flat[prefix[:-1]] = value
    return flat


@dataclass(frozen=True)
class Alert:
    source: str
    rule: str | None
    time: datetime
    priority: str | None
    output: str
    fields: dict[str, Any]
    raw: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "rule": self.rule, "time": self.time.isoformat(),
                "priority": self.priority, "output": self.output[:300]}


def falco_alert(obj: dict[str, Any]) -> Alert:
    """A Falco JSON alert (json_output / http_output / falcosidekick payload)."""
    for key in ("time", "rule", "output"):
        if key not in obj:
            raise ValueError(f"not a Falco alert: no {key!r}")
    return Alert("falco", obj["rule"], parse_time(obj["time"]), obj.get("priority"),
                 obj["output"], dict(obj.get("output_fields") or {}), obj)


def audit_event(obj: dict[str, Any]) -> Alert:
    """An audit.k8s.io/v1 Event, as an Alert with flattened dotted fields."""
    if obj.get("kind") != "Event" or "auditID" not in obj:
        raise ValueError("not an audit Event")
    fields = flatten({k: v for k, v in obj.items()
                      if k not in ("requestObject", "responseObject")})
    for key in ("requestObject", "responseObject"):  # e.g. responseObject.spec.type
        if isinstance(obj.get(key), dict):
            fields.update(flatten(obj[key], f"{key}."))
    stamp = obj.get("stageTimestamp") or obj.get("requestReceivedTimestamp")
    output = f"{obj.get('verb')} {obj.get('requestURI')} by " \
             f"{(obj.get('user') or {}).get('username', '?')} -> " \
             f"{(obj.get('responseStatus') or {}).get('code')} ({obj.get('stage')})"
    return Alert("audit", None, parse_time(stamp), obj.get("level"), output, fields, obj)


@dataclass(frozen=True)
class AlertMatcher:
    source: str
    rule: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    nonce: str | None = None

    def matches(self, alert: Alert, since: datetime) -> bool:
        if alert.source != self.source or alert.time < since:
            return False
        if alert.source == "audit" and "dryRun=" in str(alert.fields.get("requestURI", "")):
            return False  # a server-side dry run changed nothing: never what an attack did
        if self.rule is not None and alert.rule != self.rule:
            return False
        for name, expected in self.fields.items():
            actual = alert.fields.get(name)
            if actual is None or not fnmatch.fnmatchcase(str(actual), str(expected)):
                return False
        if self.nonce:
            haystack = [alert.output] + [str(v) for v in alert.fields.values()]
            return any(self.nonce in text for text in haystack)
        return True


def parse_matcher(raw: Any, nonce: str | None = None) -> AlertMatcher:
    """Validate a catalog `alert:` mapping. ValueError names the bad field."""
    if not isinstance(raw, dict):
        raise ValueError("alert must be a mapping")
    unknown = sorted(set(raw) - {"source", "rule", "fields"})
    if unknown:
        raise ValueError(f"alert has unknown field(s) {', '.join(unknown)}")
    if raw.get("source") not in SOURCES:
        raise ValueError(f"alert.source must be one of {', '.join(SOURCES)}")
    rule = raw.get("rule")
    if rule is not None and (not isinstance(rule, str) or not rule.strip()):
        raise ValueError("alert.rule must be a non-empty string")
    if raw["source"] == "audit" and rule is not None:
        raise ValueError("alert.rule is not allowed for source audit: audit events carry no "
                         "rule name (match on fields)")
    if raw["source"] == "falco" and rule is None:
        raise ValueError("alert.rule is required for source falco")
    fields = raw.get("fields") or {}
    if not isinstance(fields, dict) or not all(isinstance(k, str) for k in fields):
        raise ValueError("alert.fields must map field names to values")
    if raw["source"] == "audit" and not fields:
        raise ValueError("alert.fields is required for source audit")
    return AlertMatcher(raw["source"], rule, {k: str(v) for k, v in fields.items()}, nonce)


@dataclass
class MatchResult:
    matched: Alert | None
    seen: list[Alert]
    reason: str = ""

    def evidence(self) -> dict[str, Any]:
        return {"matched": self.matched.raw if self.matched else None,
                "alerts_in_window": [a.summary() for a in self.seen[-WINDOW_LIMIT:]],
                "reason": self.reason}


class AlertSource(Protocol):
    name: str

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def wait_for(self, matcher: AlertMatcher, since: datetime,
                 deadline_s: float = 15.0) -> MatchResult: ...


class AlertBuffer:
    """Ingested alerts plus a Condition: the shared mechanics of every live source."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._alerts: list[Alert] = []
        self._changed = threading.Condition()

    def ingest(self, alert: Alert) -> None:
        with self._changed:
            self._alerts.append(alert)
            self._changed.notify_all()

    def start(self) -> None:
        """Live sources start their readers in a subclass."""

    def stop(self) -> None:
        """Live sources stop their readers in a subclass."""

    def wait_for(self, matcher: AlertMatcher, since: datetime,
                 deadline_s: float = 15.0) -> MatchResult:
        end = time.monotonic() + deadline_s
        with self._changed:
            checked = 0
            while True:
                for alert in self._alerts[checked:]:
                    if matcher.matches(alert, since):
                        return MatchResult(alert, self._window(since))
                checked = len(self._alerts)
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return MatchResult(None, self._window(since), f"no matching {self.name} "
                                       f"alert within {deadline_s:.0f}s")
                self._changed.wait(remaining)

    def _window(self, since: datetime) -> list[Alert]:
        return [a for a in self._alerts if a.time >= since]


class MissingSource:
    """The cluster keeps no such trail (e.g. no --audit-log-path): the detector the control
    relies on does not exist, so every wait fails at once with the reason."""

    def __init__(self, name: str, reason: str) -> None:
        self.name, self.reason = name, reason

    def start(self) -> None:
        """Nothing to start: there is no trail to read."""

    def stop(self) -> None:
        """Nothing to stop."""

    def wait_for(self, matcher: AlertMatcher, since: datetime,
                 deadline_s: float = 15.0) -> MatchResult:
        return MatchResult(None, [], self.reason)


class AuditLogSource(AlertBuffer):
    """Tails an audit log file from its end at start(). Files have no wait primitive, so the
    reader polls for appended lines every 100 ms (bounded by stop()); readers are still woken
    through the Condition as soon as a line is ingested."""

    def __init__(self, path: Path, poll_s: float = 0.1) -> None:
        super().__init__("audit")
        self.path, self.poll_s = Path(path), poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._position = self.path.stat().st_size if self.path.exists() else 0
        self._thread = threading.Thread(target=self._tail, name="audit-tail", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _tail(self) -> None:
        pending = b""
        while not self._stop.is_set():
            if self.path.exists():
                size = self.path.stat().st_size
                if size < self._position:  # rotated
                    self._position, pending = 0, b""
                if size > self._position:
                    with self.path.open("rb") as handle:
                        handle.seek(self._position)
                        pending += handle.read(size - self._position)
                    self._position = size
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        self._ingest_line(line)
            self._stop.wait(self.poll_s)

    def _ingest_line(self, line: bytes) -> None:
        try:
            self.ingest(audit_event(json.loads(line)))
        except ValueError:
            pass  # a partial or foreign line is not an audit event


class LineSource(AlertBuffer):
    """JSON alerts from a stream of lines: Falco's JSON output from its pods' logs, or audit
    events from `tail -F` of the log on a kind node."""

    PARSERS = {"falco": falco_alert, "audit": audit_event}

    def __init__(self, name: str, lines: Iterable[str | bytes] | None = None,
                 on_stop: Callable[[], Any] | None = None) -> None:
        super().__init__(name)
        self._parse = self.PARSERS[name]
        self._lines = lines
        self._on_stop = on_stop

    def stop(self) -> None:
        if self._on_stop is not None:
            self._on_stop()

    def start(self) -> None:
        if self._lines is not None:
            threading.Thread(target=self._pump, name=f"{self.name}-lines", daemon=True).start()

    def _pump(self) -> None:
        for line in self._lines:
            self.feed(line)

    def feed(self, line: str | bytes) -> None:
        try:
            self.ingest(self._parse(json.loads(line)))
        except ValueError:
            pass  # Falco also logs non-alert lines; a tail may start mid-line


MAX_BODY = 1024 * 1024  # one Falco alert; more is refused (413)
# One audit EventList batch (the API server's --audit-webhook-batch-max-size, default 400
# events, some at RequestResponse level); more is refused (413) and the API server retries,
# then drops the batch: keep its batches under this (the README says how).
MAX_AUDIT_BATCH = 8 * 1024 * 1024
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9._~-]{16,256}$")
TOKEN_RULE = ("16-256 characters from A-Z a-z 0-9 . _ ~ - (safe in a URL query and in "
              "falcosidekick's WEBHOOK_CUSTOMHEADERS)")


def new_token() -> str:
    """A random shared token (256 bits), URL- and header-safe."""
    return secrets.token_urlsafe(32)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, handler) -> None:
        # Bind exactly the address given: IPv6 literals need an AF_INET6 socket.
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), handler)


class _JsonPostServer(AlertBuffer):
    """An HTTP receiver that ingests JSON POST bodies, bound to exactly the address given.

    Alerts decide verdicts, so a POST is ingested only when it carries the shared token
    (`Authorization: Bearer <token>`, or `?token=<token>` in the URL for senders that cannot
    set headers, such as Falco's http_output), compared in constant time. Refused, and never
    ingested: a missing or wrong token (401, before the body is read), no Content-Length
    (411), a body over `max_body` bytes (413, not read), a body that is not a JSON object or
    not an alert (400). `token=None` with `insecure=True` is the explicit opt-out; without
    either a random token is made (`token_generated`)."""

    INSECURE_FLAG = "--falco-receiver-insecure"  # the suite option that made it insecure

    def __init__(self, name: str, host: str, port: int, token: str | None = None,
                 insecure: bool = False, max_body: int = MAX_BODY) -> None:
        super().__init__(name)
        if token is not None and insecure:
            raise ValueError("a token and insecure exclude each other")
        if token is not None and not TOKEN_PATTERN.match(token):
            raise ValueError(f"the receiver's token must be {TOKEN_RULE}")
        self.host, self.port, self.max_body = host, port, max_body
        self.insecure = insecure
        self.token_generated = token is None and not insecure
        self.token = None if insecure else (token or new_token())
        self.accepted = 0
        self.refused: Counter[str] = Counter()
        self._server: ThreadingHTTPServer | None = None

    def parse(self, body: Any) -> list[Alert]:
        raise NotImplementedError

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def authorized(self, headers, path: str) -> bool:
        """True when the request carries the token (header or URL query), or the receiver is
        insecure. Every candidate is compared with hmac.compare_digest."""
        if self.token is None:
            return True
        expected = self.token.encode()
        candidates = []
        scheme, _, credential = (headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "bearer":
            candidates.append(credential.strip())
        candidates += parse_qs(urlsplit(path).query).get("token", [])
        matched = False
        for candidate in candidates:  # no early exit: every candidate costs the same
            matched |= hmac.compare_digest(candidate.encode(errors="replace"), expected)
        return matched

    def describe(self) -> str:
        if self.token is None:
            return (f"{type(self).__name__} on {self.address}, INSECURE: no token "
                    f"({self.INSECURE_FLAG}): anyone who can reach it can forge alerts")
        return (f"{type(self).__name__} on {self.address}, shared token required "
                f"(Authorization: Bearer or ?token=), bodies up to {self.max_body} bytes")

    def status(self) -> dict[str, Any]:
        """What the receiver did: for the reports (never the token)."""
        return {"receiver": self.describe(), "token_required": self.token is not None,
                "accepted": self.accepted, "refused": dict(sorted(self.refused.items()))}

    def _refuse(self, why: str) -> None:
        with self._changed:
            self.refused[why] += 1

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10  # a sender that stalls mid-request does not hold a thread forever

            def log_message(self, *args):  # the suite's output stays clean
                pass

            def _answer(self, status: int, text: str, headers: dict | None = None) -> None:
                data = (text + "\n").encode()
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                if status != 200:  # the unread rest of a refused body must not be parsed
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(data)

            def _refuse(self, status: int, why: str, **headers: str) -> None:
                receiver._refuse(f"{status} {why}")
                self._answer(status, why, headers)

            def do_POST(self):
                if not receiver.authorized(self.headers, self.path):
                    return self._refuse(401, "missing or wrong token",
                                        **{"WWW-Authenticate": "Bearer"})
                if self.headers.get("Transfer-Encoding"):
                    return self._refuse(411, "chunked bodies are not accepted")
                raw_length = self.headers.get("Content-Length")
                if raw_length is None or not raw_length.strip().isdigit():
                    return self._refuse(411, "a Content-Length is required")
                length = int(raw_length)
                if length > receiver.max_body:
                    return self._refuse(413, f"body over {receiver.max_body} bytes")
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                    if not isinstance(body, dict):
                        raise ValueError("not a JSON object")
                    alerts = receiver.parse(body)
                except (ValueError, TypeError, KeyError, AttributeError) as exc:
                    return self._refuse(400, f"not an alert: {type(exc).__name__}")
                for alert in alerts:
                    receiver.ingest(alert)
                with receiver._changed:
                    receiver.accepted += 1
                self._answer(200, "ok")

        self._server = _Server(self.host, self.port, Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.1,),
                         name=f"{self.name}-receiver", daemon=True).start()

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()


class FalcoHttpReceiver(_JsonPostServer):
    """Falco `http_output` (or falcosidekick webhook) target: one alert per POST."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 insecure: bool = False, max_body: int = MAX_BODY) -> None:
        super().__init__("falco", host, port, token, insecure, max_body)

    def parse(self, body: Any) -> list[Alert]:
        return [falco_alert(body)]


class AuditWebhookReceiver(_JsonPostServer):
    """The API server's audit webhook backend (--audit-webhook-config-file): POSTs an
    audit.k8s.io/v1 EventList, one batch (mode batch) or one event (mode blocking) per POST.
    Its webhook kubeconfig carries the shared token as `users[].user.token`, which the API
    server sends as `Authorization: Bearer <token>`."""

    INSECURE_FLAG = "--audit-webhook-insecure"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 insecure: bool = False, max_body: int = MAX_AUDIT_BATCH) -> None:
        super().__init__("audit", host, port, token, insecure, max_body)

    def parse(self, body: Any) -> list[Alert]:
        if body.get("kind") != "EventList":
            raise ValueError("not an audit EventList")
        return [audit_event(item) for item in body.get("items", [])]
