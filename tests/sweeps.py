"""How much of the slow exhaustive sweeps a run checks (the library of losses in every dtype,
target and reduction).

A developer's run checks every case. CI (``CI=true``) runs a sample that still checks every
loss and every variant somewhere, each sweep saying how it divides the cases; set
``LOSSDSL_FULL_SWEEPS=1`` to run every case on CI too. Where a test reads a loss's value,
gradient and Hessian diagonal, CI reads all three from the one fused kernel that computes
them (one cold compile instead of two or three) and a developer's run from the kernels users
call (``__call__``, ``grad_and_hessian``, ...): most of a cold run is compiling kernels.
"""

import math
import os

import numpy as np

#: Whether the sweeps sample: on CI, unless LOSSDSL_FULL_SWEEPS asks for every case.
SAMPLING: bool = bool(os.environ.get("CI") and not os.environ.get("LOSSDSL_FULL_SWEEPS"))


def within_domains(compiled, inputs: dict, rng: np.random.Generator) -> dict:
    """``inputs`` with each input that has a declared domain (``y in {-1, 1}``,
    ``y in [0, inf)``) redrawn inside it where the synthetic values fall outside: a set's
    members at random; an interval's values folded in (``|v|`` above a finite low end, a
    uniform draw between two finite ends)."""
    inputs = dict(inputs)
    for name, domains in compiled.input_domains().items():
        values = np.asarray(inputs[name], dtype=np.float64)
        for domain in domains:
            if all(v in domain for v in values.flat):
                continue
            if domain.members:
                values = rng.choice(domain.members, values.shape)
                continue
            low, high = domain.closed
            if math.isfinite(domain.low) and math.isfinite(domain.high):
                values = rng.uniform(low, high, values.shape)
            elif math.isfinite(domain.low):
                values = low + np.abs(values) + (0.5 if domain.low_open else 0.0)
            else:
                values = high - np.abs(values) - (0.5 if domain.high_open else 0.0)
        inputs[name] = values
    return inputs
