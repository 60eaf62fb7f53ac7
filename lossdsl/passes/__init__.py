"""The compiler's passes over the expression graph, in pipeline order: ``shapes`` (axes once
inputs are bound, the objective) → ``diff`` (gradients, diagonal Hessians) → the rewrite
phases (``rewrite``: Rule, Phase and the driver; ``rules/``: canonicalize, stabilize, expand,
run as ``simplify``, ``stabilize`` and ``lower``) → ``schedule`` (fused loops). The order is
stated once, in :mod:`lossdsl.compiler`."""
