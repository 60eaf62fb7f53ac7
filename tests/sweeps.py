"""How much of the slow exhaustive sweeps a run checks (the library of losses in every dtype,
target and reduction).

A developer's run checks every case. CI (``CI=true``) runs a sample that still checks every
loss and every variant somewhere, each sweep saying how it divides the cases; set
``LOSSDSL_FULL_SWEEPS=1`` to run every case on CI too.
"""

import os

#: Whether the sweeps sample: on CI, unless LOSSDSL_FULL_SWEEPS asks for every case.
SAMPLING: bool = bool(os.environ.get("CI") and not os.environ.get("LOSSDSL_FULL_SWEEPS"))
