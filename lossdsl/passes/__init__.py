"""The compiler's passes over the expression graph, in pipeline order: ``shapes`` (axes once
inputs are bound) → ``diff`` (gradients, diagonal Hessians) → ``simplify`` / ``stabilize``
(algebra, stable forms) → ``lower`` (stable primitives expanded) → ``schedule`` (fused passes)."""
