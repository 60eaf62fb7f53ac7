"""Settings Numba reads from the environment when it is first imported, made before lossdsl
imports it.

``NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING``: while typing a kernel, Numba tries candidate
signatures and literal types that fail, thousands of times per kernel, and formats an error
message for each; where colorama is installed it highlights each message, wrapping and
unwrapping ``sys.stdout`` and ``sys.stderr`` every time. Without it a kernel's first compile
is shorter (new processes, an empty cache, three runs each: a 40-term loss's value +
gradient 5.3-6.5 s -> 4.4-5.1 s, six library losses' two kernels 5.2-5.9 s -> 4.6-5.6 s);
Numba's messages lose only their bold escape codes. A value set beforehand is kept (Numba
highlights where the variable is unset or empty), and where Numba was imported before
lossdsl this changes nothing.
"""

import os

os.environ.setdefault("NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING", "1")
