"""The Numba CUDA backend: the module generator (``codegen``), the label checks on the device
(``labels``) and the run-time support generated modules import (``runtime``)."""
