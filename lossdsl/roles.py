"""Which inputs positional arguments stand for, in the framework front ends.

``lossdsl.torch`` takes ``(input, target)`` as ``torch.nn`` losses do; ``lossdsl.jax`` takes
``(y_true, y_pred)`` as optax and Keras do. Either way the roles are read from the inputs'
names: the target is the input named like a label (``y``, ``target``, ``label``, ...), the
prediction the only other input left without a keyword. Roles the names do not tell are
refused, never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .boosting.objective import LABEL_NAMES
from .errors import LossError


def positional_inputs(inputs: tuple[str, ...], keywords: Mapping[str, Any], count: int, *,
                      target_first: bool, convention: str, call: str) -> tuple[str, ...]:
    """The inputs that ``count`` positional arguments stand for.

    ``inputs``: the loss's inputs; ``keywords``: those given by keyword (not positional
    candidates); ``target_first``: whether the target comes before the prediction;
    ``convention`` and ``call`` word the errors (``"(input, target), as torch.nn losses take
    them"``, ``"criterion"``).
    """
    if not count:
        return ()
    left = [name for name in inputs if name not in keywords]
    targets = [name for name in left if name in LABEL_NAMES]
    predictions = [name for name in left if name not in LABEL_NAMES]
    example = ", ".join(f"{name}=..." for name in inputs)
    if count > 2:
        raise LossError(f"positional arguments are {convention}; got {count}: pass the others "
                        f"by keyword ({call}({example}))")
    if count > len(left):
        raise LossError(f"{count} positional arguments, but only {len(left)} input(s) left "
                        f"without a keyword ({', '.join(left) or 'none'}): pass each input "
                        f"once ({call}({example}))")
    if count == 1 and len(left) == 1:
        return tuple(left)
    if len(targets) == 1 and len(predictions) == 1:
        pair = (targets[0], predictions[0]) if target_first else (predictions[0], targets[0])
        return pair[:count]
    first, second = ("target", "prediction") if target_first else ("prediction", "target")
    raise LossError(f"cannot tell which of the inputs ({', '.join(left)}) is the {first} and "
                    f"which the {second} from their names: pass them by keyword "
                    f"({call}({example}))")
