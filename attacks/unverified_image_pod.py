"""Create a bare Pod whose image comes from the trusted registry but fails the supply-chain
policy: no signature by the organisation's key (`unsigned`), a signature by a foreign key
(`foreign`), no vulnerability-scan attestation (`unscanned`), or a scan attestation that
lists a critical finding (`critical`).

Differential proof: the twin is the same pod with the signed image that carries a clean scan
attestation (the lab's `trusted` sample, or --signed-image); it must be admitted, so a
webhook that is down, a deny-everything rule or the trusted-registry policy cannot be the
reason. Each lab sample differs from the signed one in exactly the property under test.
Dry runs, in the run's namespace and every workload namespace tried (kubeprobe.admission).

SUCCEEDED: the pod is admitted.
BLOCKED:   admission refused it (the evidence names the webhook and its message) and
           admitted the twin.
"""
from kubeprobe.admission import differential, pod_write, with_sweep
from kubeprobe.context import Unavailable
from kubeprobe.supplychain import IMAGE_OPTIONS, Unconfigured
from kubeprobe.workloads import pod_manifest

TARGETS = "apiserver"


def _pair(ctx, image, signed, namespace):
    return (pod_write(ctx, "a pod with the signed, clean-scanned image",
                      pod_manifest(ctx, ctx.unique_name("probe"), signed), namespace),
            pod_write(ctx, f"a pod with {image}",
                      pod_manifest(ctx, ctx.unique_name("probe"), image), namespace))


def run(ctx, target, image="unsigned"):
    chain = ctx.supply_chain
    if chain is None:
        raise Unavailable(f"{IMAGE_OPTIONS[image][1]} is not named (pass "
                          f"{IMAGE_OPTIONS[image][0]} REF and --signed-image REF)")
    try:
        bad, signed = chain.image(image), chain.image("signed")
    except Unconfigured as exc:
        raise Unavailable(str(exc)) from None
    property_under_test = f"{IMAGE_OPTIONS[image][1]}: {bad}"
    observation, _ = differential(ctx, property_under_test,
                                  *_pair(ctx, bad, signed, ctx.namespace()))
    exempt = set(chain.exempt_namespaces)
    if exempt and ctx.sweep_namespaces is not None:
        everywhere = ctx.sweep_namespaces
        ctx.sweep_namespaces = lambda: [n for n in everywhere() if n not in exempt]
    observation = with_sweep(ctx, observation, property_under_test,
                             lambda namespace: _pair(ctx, bad, signed, namespace))
    observation.evidence["supply chain"] = chain.describe()
    if exempt:
        by = ("the lab" if chain.source == "lab" else "--registry-exempt-namespaces")
        observation.evidence["not swept"] = (f"{', '.join(sorted(exempt))}: left alone by the "
                                             "signature webhook by design (its own namespace, "
                                             f"the detector's; named by {by})")
    return observation
