"""The rewrite rules, one module per phase: ``canonicalize`` (the algebraic identities that
``ir.build.make`` applies to every node it builds), ``stabilize`` (numerically fragile
patterns into stable primitives) and ``expand`` (stable primitives written through shared
subexpressions, for code generation). The driver and the rule type are in ``passes.rewrite``."""
