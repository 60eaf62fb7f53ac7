"""Per-image Dice (group totals of (N, K) rows) against JAX, in one process (issue #16).

    PYTHONPATH=. python3 benchmarks/bench_group_totals.py                  # 16 x 64 x 64 x 4
    PYTHONPATH=. python3 benchmarks/bench_group_totals.py --images 8 --side 128 --classes 8

``dice_images_logits(y, z, g, smooth=0.0)`` over the rows of ``--images`` images of
``--side`` x ``--side`` pixels and ``--classes`` classes (``g`` each row's image), compiled
for ``--target``: its value, and value + gradient with respect to the logits, against
``jax.jit`` of ``optax.losses.dice_loss(apply_softmax=True)`` averaged over the images (and
``jax.value_and_grad`` of it) on the (images, pixels, classes) arrays. The results are
checked to agree first. Each peer runs ``--inner`` calls in a block; the blocks are
interleaved over ``--repeat`` rounds (a burst of load on a shared machine hits every peer)
and the fastest block gives the time per call, in milliseconds. The ratio is JAX's time over
lossdsl's (above 1: lossdsl is faster).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np


def fastest_block(calls: dict[str, Callable[[], object]], inner: int,
                  repeat: int) -> dict[str, float]:
    """Seconds per call of each of ``calls``: the fastest of ``repeat`` interleaved blocks
    of ``inner`` calls."""
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(repeat):
        for name, call in calls.items():
            start = time.perf_counter()
            for _ in range(inner):
                call()
            best[name] = min(best[name], (time.perf_counter() - start) / inner)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--target", default="parallel")
    parser.add_argument("--inner", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=15)
    arguments = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import optax

    import lossdsl

    jax.config.update("jax_enable_x64", True)
    images, pixels, classes = arguments.images, arguments.side ** 2, arguments.classes
    rng = np.random.default_rng(0)
    y = np.eye(classes)[rng.integers(0, classes, (images, pixels))]
    z = rng.normal(size=(images, pixels, classes))
    rows_y, rows_z = y.reshape(-1, classes), z.reshape(-1, classes)
    g = np.repeat(np.arange(images), pixels)
    loss = lossdsl.compile("dice_images_logits(y, z, g, smooth=0.0)", target=arguments.target)

    def optax_dice(scores):
        return jnp.mean(optax.losses.dice_loss(scores, jnp.asarray(y), smooth=0.0,
                                               apply_softmax=True))

    jax_value = jax.jit(optax_dice)
    jax_value_and_grad = jax.jit(jax.value_and_grad(optax_dice))
    scores = jnp.asarray(z)

    value, gradient = loss.value_and_grad("z", y=rows_y, z=rows_z, g=g)
    expected_value, expected_gradient = jax_value_and_grad(scores)
    gradient_error = np.abs(gradient - np.asarray(expected_gradient).reshape(-1, classes)).max()
    # the same quantities, or the timings compare different work
    np.testing.assert_allclose(value, float(expected_value), rtol=1e-10)
    np.testing.assert_allclose(gradient, np.asarray(expected_gradient).reshape(-1, classes),
                               rtol=1e-8, atol=1e-15)
    print(f"N = {images * pixels} rows x {classes} classes ({images} images), "
          f"target {arguments.target}: |value - jax| = {abs(value - float(expected_value)):.1e},"
          f" max |gradient - jax| = {gradient_error:.1e}")

    times = fastest_block({
        "lossdsl value": lambda: loss(y=rows_y, z=rows_z, g=g),
        "jax value": lambda: jax.block_until_ready(jax_value(scores)),
        "lossdsl value_and_grad": lambda: loss.value_and_grad("z", y=rows_y, z=rows_z, g=g),
        "jax value_and_grad": lambda: jax.block_until_ready(jax_value_and_grad(scores)),
    }, arguments.inner, arguments.repeat)
    for call in ("value", "value_and_grad"):
        ours, theirs = times[f"lossdsl {call}"], times[f"jax {call}"]
        print(f"{call:>15}: lossdsl {ours * 1e3:7.3f} ms   jax.jit {theirs * 1e3:7.3f} ms   "
              f"jax/lossdsl {theirs / ours:5.2f}")


if __name__ == "__main__":
    main()
