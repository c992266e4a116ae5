"""One attack per module. Each module has a docstring saying what SUCCEEDED and BLOCKED mean,
`TARGETS` (the endpoint kind it attacks) and `run(ctx, target, **params) -> Observation`."""
