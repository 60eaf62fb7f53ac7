"""Generate the minimax coefficients used by ``vector_math`` (offline helper, needs mpmath).

The exp kernel approximates q(r) = (exp(r) - 1 - r) / r**2 on [-R, R], R slightly above ln(2)/2,
minimising the *relative* error of q; then exp(r) - 1 = r + r**2 * q(r).  A relative bound on q
gives a relative bound on expm1(r) (error <= |r|/2 * eps_q) and on exp(r), so the same kernel
serves vexp and vexpm1.

Usage:  python3 tools/vector_math_coefficients.py
"""

from __future__ import annotations

import mpmath as mp

mp.mp.dps = 60


def q_exact(r: mp.mpf) -> mp.mpf:
    """(exp(r) - 1 - r) / r**2 without cancellation (series near 0)."""
    if abs(r) < mp.mpf("1e-8"):
        return mp.mpf(1) / 2 + r / 6 + r**2 / 24 + r**3 / 120
    return (mp.expm1(r) - r) / r**2


def remez(f, a, b, deg, iters=30, grid=4000):
    """Minimax polynomial (relative error) of degree ``deg`` for f on [a, b]."""
    n = deg + 2
    # Chebyshev extrema as the initial reference.
    xs = [(a + b) / 2 - (b - a) / 2 * mp.cos(mp.pi * i / (n - 1)) for i in range(n)]
    coeffs = None
    for _ in range(iters):
        # Solve p(x_i) + (-1)^i * E * f(x_i) = f(x_i)  (relative-error weighting).
        mat = mp.matrix(n, n)
        rhs = mp.matrix(n, 1)
        for i, x in enumerate(xs):
            fx = f(x)
            for j in range(deg + 1):
                mat[i, j] = x**j
            mat[i, deg + 1] = (-1) ** i * fx
            rhs[i] = fx
        sol = mp.lu_solve(mat, rhs)
        coeffs = [sol[j] for j in range(deg + 1)]

        def err(x, c=coeffs):
            return (mp.polyval(c[::-1], x) - f(x)) / f(x)

        # Locate the extrema of the error on a fine grid, one per sign-alternating segment.
        pts = [a + (b - a) * i / grid for i in range(grid + 1)]
        vals = [err(x) for x in pts]
        ext = []
        seg_best = (pts[0], vals[0])
        for x, v in zip(pts[1:], vals[1:]):
            if mp.sign(v) == mp.sign(seg_best[1]):
                if abs(v) > abs(seg_best[1]):
                    seg_best = (x, v)
            else:
                ext.append(seg_best)
                seg_best = (x, v)
        ext.append(seg_best)
        # Keep the n largest consecutive extrema with alternating sign.
        while len(ext) > n:
            if abs(ext[0][1]) < abs(ext[-1][1]):
                ext.pop(0)
            else:
                ext.pop()
        if len(ext) < n:
            break
        xs = [e[0] for e in ext]
    maxerr = max(abs(err(x)) for x in [a + (b - a) * i / grid for i in range(grid + 1)])
    return coeffs, maxerr


def rounded_error(f, coeffs, a, b, grid=4000):
    """Max relative error after rounding the coefficients to the target format."""
    return max(
        abs((mp.polyval(coeffs[::-1], x) - f(x)) / f(x))
        for x in [a + (b - a) * i / grid for i in range(grid + 1)]
    )


def main() -> None:
    import numpy as np

    rmax = mp.mpf("0.3467")  # ln(2)/2 = 0.34657..., plus rounding slack of the reduction
    # The degrees used by vector_math (float64: 10, float32: 5).
    for name, deg, cast in (("float64", 10, np.float64), ("float32", 5, np.float32)):
        c, e = remez(q_exact, -rmax, rmax, deg)
        cr = [mp.mpf(float(cast(float(ci)))) for ci in c]
        er = rounded_error(q_exact, cr, -rmax, rmax)
        print(
            f"{name} deg {deg}: minimax rel err 2^{float(mp.log(e, 2)):.2f}, "
            f"after rounding 2^{float(mp.log(er, 2)):.2f}"
        )
        for i, ci in enumerate(cr):
            print(f"    E{i} = {float(ci)!r}  # {float(ci).hex()}")


if __name__ == "__main__":
    main()
