"""Classify what the API server answered to an attack made through the official client.

An ApiException becomes BLOCKED only when its Status names a recognised authority:
  admission_denial  ValidatingAdmissionPolicy, an admission webhook (Gatekeeper, Kyverno, an
                    image-policy webhook), Pod Security Admission, NodeRestriction
  http_403          RBAC / authorizer: `... cannot <verb> resource ...`
  http_401          authentication refused
Anything else (a 404, a 409, a 500, a connection error) is INCONCLUSIVE.
"""
from __future__ import annotations

import json
import re
from typing import Any

from kubernetes.client.rest import ApiException

from kubeprobe.outcome import Authority, Observation

# (mechanism, pattern) in the Status message. Order matters: most specific first.
ADMISSION_PATTERNS = (
    ("ValidatingAdmissionPolicy", re.compile(r"ValidatingAdmissionPolicy '([^']+)'")),
    ("ImagePolicyWebhook", re.compile(r"image policy webhook")),
    ("admission webhook", re.compile(r'admission webhook "([^"]+)" denied the request')),
    ("PodSecurity", re.compile(r'violates PodSecurity "([^"]+)"')),
    # plugin/pkg/admission/noderestriction: `node "a" is not allowed to modify node "b"`,
    # `node "a" can only update pod status for pods with spec.nodeName set to itself`, ...
    ("NodeRestriction", re.compile(r'node "[^"]+" (is not allowed to|can only|cannot)')),
)
RBAC_PATTERN = re.compile(r'cannot (\w+) resource "([^"]+)"')


def status_of(exc: ApiException) -> dict[str, Any]:
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        body = {}
    return {"code": exc.status, "reason": body.get("reason", exc.reason),
            "message": body.get("message", str(exc.body or exc.reason)[:500])}


def admission_mechanism(message: str) -> str | None:
    for mechanism, pattern in ADMISSION_PATTERNS:
        found = pattern.search(message)
        if found:
            named = found.group(1) if found.groups() and found.group(1) else None
            return f"{mechanism} {named}" if named and mechanism != "NodeRestriction" \
                else mechanism
    return None


def classify_api_error(exc: ApiException, what: str) -> Observation:
    status = status_of(exc)
    message = status["message"]
    mechanism = admission_mechanism(message)
    if mechanism and exc.status in (400, 403, 422):
        return Observation.blocked(Authority.ADMISSION_DENIAL,
                                   f"{what}: denied by {mechanism} (HTTP {exc.status})",
                                   mechanism=mechanism, status=status)
    if exc.status == 403 and RBAC_PATTERN.search(message):
        return Observation.blocked(Authority.HTTP_403,
                                   f"{what}: HTTP 403, authorization denied: {message[:200]}",
                                   status=status)
    if exc.status == 401:
        return Observation.blocked(Authority.HTTP_401, f"{what}: HTTP 401 Unauthorized",
                                   status=status)
    return Observation.inconclusive(f"{what}: unexpected API answer HTTP {exc.status} "
                                    f"{status['reason']}: {message[:200]}", status=status)
