"""Go tools the lab's registry and signing need, built from their Go modules once.

    kubeprobe lab tools [NAME ...]    build (or find) the tools; one line each

The builder, its cache and stamps are kubeprobe/gotools.py's, shared with kind's tools and the
self-tests'.
"""
from __future__ import annotations

import sys
from pathlib import Path

from kubeprobe.gotools import GoTool, ToolUnavailable, ensure, report, stamp  # noqa: F401

REGISTRY = GoTool("registry", "github.com/distribution/distribution/v3", "v3.1.2",
                  ("github.com/distribution/distribution/v3/cmd/registry",))
_WEBHOOK = "github.com/sigstore/policy-controller/cmd/webhook"
# policy-controller's webhook and the cosign CLI it is built on (cosign v2.5.0, the version its
# go.mod requires), from one wrapper module (its go.mod has replace directives): the signer
# and the verifier are the same cosign, and their shared packages compile once (cosign from
# its own module graph took 238 s cold here; beside the webhook, about 45 s more).
POLICY_CONTROLLER = GoTool("policy-controller", "github.com/sigstore/policy-controller",
                           "v0.13.1", (_WEBHOOK, "github.com/sigstore/cosign/v2/cmd/cosign"),
                           how="wrapper", outputs={_WEBHOOK: "policy-controller"})
TOOLS = {t.name: t for t in (REGISTRY, POLICY_CONTROLLER)}
ALIASES = {"cosign": "policy-controller"}


def cosign(log=lambda line: None) -> Path:
    """The cosign CLI (built beside policy-controller's webhook)."""
    ensure(POLICY_CONTROLLER, log=log)
    return POLICY_CONTROLLER.dir / "cosign"


def main(argv: list[str] | None = None) -> int:
    names = [ALIASES.get(n, n) for n in (argv if argv is not None else sys.argv[1:])
             or list(TOOLS)]
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        print(f"kubeprobe: unknown tool {unknown[0]!r} (known: {', '.join(TOOLS)})",
              file=sys.stderr)
        return 2
    say = lambda line: print(f"[gotools] {line}", flush=True)  # noqa: E731
    return 1 if report([TOOLS[n] for n in dict.fromkeys(names)], say) else 0


if __name__ == "__main__":
    sys.exit(main())
