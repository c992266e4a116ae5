"""Go tools the lab's registry and signing need, built from their Go modules once.

    kubeprobe lab tools [NAME ...]    build (or find) the tools; one line each

The builder, its cache and stamps are kubeprobe/gotools.py's, shared with kind's tools and the
self-tests'.
"""
from __future__ import annotations

import sys

from kubeprobe.gotools import GoTool, ToolUnavailable, ensure, report, stamp  # noqa: F401

REGISTRY = GoTool("registry", "github.com/distribution/distribution/v3", "v3.1.2",
                  ("github.com/distribution/distribution/v3/cmd/registry",))
COSIGN = GoTool("cosign", "github.com/sigstore/cosign/v2", "v2.6.5",
                ("github.com/sigstore/cosign/v2/cmd/cosign",))
# the module's go.mod has replace directives: built through a wrapper module
POLICY_CONTROLLER = GoTool("policy-controller", "github.com/sigstore/policy-controller",
                           "v0.13.1", ("github.com/sigstore/policy-controller/cmd/webhook",),
                           how="wrapper", outputs={
                               "github.com/sigstore/policy-controller/cmd/webhook":
                               "policy-controller"})
TOOLS = {t.name: t for t in (REGISTRY, COSIGN, POLICY_CONTROLLER)}


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(TOOLS)
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        print(f"kubeprobe: unknown tool {unknown[0]!r} (known: {', '.join(TOOLS)})",
              file=sys.stderr)
        return 2
    say = lambda line: print(f"[gotools] {line}", flush=True)  # noqa: E731
    return 1 if report([TOOLS[n] for n in names], say) else 0


if __name__ == "__main__":
    sys.exit(main())
