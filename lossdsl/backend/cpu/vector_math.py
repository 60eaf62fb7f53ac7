"""Branch-free, SIMD-vectorisable ``exp``/``expm1``/``log``/``log1p``/``tanh``/``pow`` for Numba.

Why this exists
---------------
Without Intel SVML, Numba lowers ``math.exp``/``math.log``/``math.log1p`` to scalar libm calls,
and a call inside a loop stops LLVM's loop vectoriser.  The kernels below use only ``+ - * /``,
integer bit manipulation and ``a if c else b`` conditionals that LLVM turns into ``select``
instructions, so after inlining ``for i in range(n): out[i] = vexp(a[i])`` vectorises.

Public API (callable from Python and from ``@njit`` code)::

    vexp(x)   vexpm1(x)   vlog(x)   vlog1p(x)   vtanh(x)   vpow(x, y)

Each accepts a float64 or float32 scalar and returns the same dtype (integers and booleans
are promoted to float64).  float32 uses float32 arithmetic throughout (shorter polynomials,
twice the SIMD width), not float64-and-cast.

Algorithms
----------
* exp / expm1: Cody-Waite reduction ``x = k*ln2 + r``, ``|r| <= ln2/2``, with ``k`` rounded by
  the ``1.5*2**p`` shifter trick (no float->int conversion; one multiply-add) and the rounding
  error of ``r`` recovered exactly (Fast2Sum).  ``expm1(r) = r + r*r*Q(r)`` where ``Q`` is a
  minimax polynomial for ``(e**r - 1 - r)/r**2`` (relative error), evaluated with Estrin's
  scheme: degree 10 for float64 (2**-57.2 after rounding the coefficients), degree 5 for
  float32 (2**-26.5); the coefficients come from ``tools/vector_math_coefficients.py``.
  ``2**k`` is built from exponent bits and applied as two factors ``2**(k>>1)`` and
  ``2**(k - (k>>1))``, the second as ``s2 + s2*(r + e)`` (one multiply-add, one rounding), so
  that overflow gives ``inf`` and results in the subnormal range are not flushed to zero.
* log / log1p: fdlibm's reduction.  The mantissa is normalised to ``[sqrt(2)/2, sqrt(2))`` by
  integer arithmetic on the bits (the exponent by a logical shift, turned into a float with
  the shifter), ``f = m - 1`` and ``s = f/(m + 1)`` (both from ``m``), and
  ``log(m) = 2 atanh(s) = f - s*(f - R(s*s))`` with fdlibm's ``Lg1..Lg7`` polynomial (degree 14
  in s, float64) or musl's ``logf`` ``Lg1..Lg4`` (degree 8, float32), evaluated as
  ``f - (s*f - (s**3*P(s*s) + lo))``: the one large product ``s*f`` enters the last
  multiply-add whole, then the exactly known ``f`` and ``k*ln2_hi`` are added.  log1p forms
  ``u = 1 + x`` and adds the rounding error of that sum, ``c = x - (u - 1)`` (exact for ``u``
  up to ``2**53``; beyond, ``c/u`` is off by 1/64 ulp of the result at most), as ``c/u``, for every
  ``u`` (no select for ``u`` already in range).  Subnormal log arguments are pre-scaled by
  ``2**54`` (``2**25`` for float32).  Two divisions per log1p (one per log); they vectorise
  (``vdivpd``), and removing either does not make ``log1p(exp(x))`` measurably faster.
* Why these forms (issue #16): a vectorised loop over these kernels is bound neither by
  memory nor by the FP pipes but by Zen 3's out-of-order window (llvm-mca: scheduler full on
  98% of cycles): when log1p follows exp, each of log1p's operations waits for exp's whole
  dependency chain, so the cost grows with operations times chain length.  The rework cut
  log1p from 53 to 43 instructions per 4 elements (no select for k == 0, no four-instruction
  emulation of a 64-bit arithmetic shift, ``m + 1`` beside ``f`` instead of ``2 + f`` after
  it, a shorter tail) and the chains of log1p and exp by about 15 and 5 cycles: single-threaded
  (float64, 10**7 elements, AVX2, Zen 3), ``log1p(exp(-|z|))`` went from 5.9 to 4.6 ns per
  element, log1p from 2.3 to 1.8, exp from 1.8 to 1.6, log from 2.2 to 2.0.  A table-driven log
  (glibc 2.28's 128 entries of ``1/c, log c``, no division) is not used: LLVM emits no AVX2
  gathers for this CPU (znver3; a loop reading two tables came out as scalar loads and inserts,
  about 15 instructions per table per vector of 4), and without FMA it needs two more tables
  and a separate path near 1.

* tanh: fdlibm's ``tanh`` from ``expm1``: for ``|x| < 1``, ``t = expm1(-2|x|)`` and
  ``-t/(t + 2)`` (no cancellation); above, ``t = expm1(2|x|)`` and ``1 - 2/(t + 2)``; ``x``
  itself below ``2**-28`` (``2**-12`` in float32), 1 from 22 on (9 in float32), the sign
  restored last. One ``expm1`` and one division per element, both vectorised.  ``vtanh``'s
  dispatch is force-inlined: LLVM's inliner left it a call, which stopped its loop vectorising.

* pow: ``exp(y log|x|)``, where an error e in ``y log|x|`` is a relative error e of the
  result, up to 745 times log's own: ``log|x|`` is carried as ``hi + lo`` to about 2**-62 of
  its value (fdlibm's reduction, ``log(1 + f) = 2s + 2s^3/3 + ...`` with ``s`` in two parts
  and the large terms added exactly; the Taylor series of ``atanh`` to ``s^27``), the product
  with ``y`` is split exactly (Dekker's product, no FMA needed), and ``exp(p + p_lo)`` is
  ``exp(p) (1 + p_lo)``. The sign of negative bases, NaN for a negative base and a
  non-integer exponent, and the rest of C99's special values are selects. float32 computes
  in float64 and rounds once. Its parts are force-inlined: too long for LLVM to inline them
  by itself, and a call in a loop stops it vectorising.

All special cases (nan, +-inf, zero, negative, -1 for log1p, overflow/underflow for exp) are
resolved by ``select``s computed alongside the main path, never by branches.

Accuracy (``python3 tests/backend/test_vector_math.py``, ~10**7 samples per function and dtype, full
ranges, tiny/huge/subnormal arguments and results): at most 1 ulp from glibc libm in float64, and at
most 1 ulp from the float64 libm result rounded to float32 for float32 inputs, with or without FMA;
log and log1p below 1 ulp of the exact value (against long double: 0.80 and 0.82 ulp with FMA,
0.91 without, float32 0.80 and 0.82, 0.88 and 0.92 without; glibc's own log1p is 1.8 ulp off
next to ``x = 1/sqrt(2) - 1``, where these are 0.2 ulp off);
tanh at most 3 ulp (expm1's ulp, then the quotient's roundings; 2 * 10**6 samples per range);
pow at most 1 ulp from glibc's pow, and 2 where the power nears over- or underflow (|y log x|
up to 745: exp's own ulp, and log's last bits times 745), float32 at most 1 ulp.
Subnormal exp results are within 1 ulp as well (single rounding, no flush to zero).

Notes
-----
* The kernels are compiled without fast-math: Cody-Waite, the shifter trick and the Fast2Sum
  corrections depend on strict IEEE evaluation order.  Callers may use
  ``fastmath={"reassoc"}`` in their own loops; LLVM keeps per-instruction flags after
  inlining, so the kernels stay strict.  They say ``fastmath=False``: a Numba function
  that leaves the option out is compiled with its first caller's flags.  Never use full
  ``fastmath=True`` on the callers if nan/inf semantics matter (``nnan``/``ninf`` let LLVM
  delete the special-case selects).
* FMA: Numba never sets the ``contract`` flag (not even with ``fastmath={"reassoc"}``), so
  plain ``a*b + c`` is never fused.  The polynomial steps here use ``llvm.fmuladd`` instead
  (see ``_mla``), which LLVM fuses only where the target has FMA and otherwise emits as
  multiply + add (never a libm ``fma`` call).  The error analysis assumes neither, and the
  accuracy tests pass in both modes; the last bit may differ between FMA and non-FMA CPUs.
  ``LOSSDSL_VECTOR_MATH_FMA=0`` (read at import) forces the unfused form for bitwise
  reproducibility across CPUs.
* Called from Python, float32 results are boxed as Python floats; inside ``@njit`` code the
  result has the argument's dtype.
"""

from __future__ import annotations

import os

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core.dispatcher import Dispatcher
from numba.extending import intrinsic, overload

__all__ = ["row_add", "row_max", "vexp", "vexpm1", "vlog", "vlog1p", "vpow", "vtanh"]

# fastmath=False is said explicitly: Numba compiles a function that does not say it with the
# flags of its first caller, a kernel's loop driver with "reassoc" among them
_JIT_OPTS = {"fastmath": False, "error_model": "numpy", "cache": True}
# pow's parts are too long for LLVM's inliner to inline on its own, and a call in a loop
# stops it vectorising: they are always inlined
_INLINED_OPTS = {**_JIT_OPTS, "forceinline": True}

# --------------------------------------------------------------------------------------------
# Bit casts.  Numba has no scalar ``float.view(int)``; an LLVM ``bitcast`` is free and, unlike
# a round trip through memory, keeps the loop vectorisable.
# --------------------------------------------------------------------------------------------


@intrinsic
def _float_bits(typingctx, x):
    """Reinterpret float64 -> int64 or float32 -> int32 (raw IEEE bits)."""
    if not isinstance(x, types.Float):
        return None
    ret = types.int64 if x.bitwidth == 64 else types.int32

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(sig.return_type))

    return ret(x), codegen


def _bits_to_float_intrinsic(ftype: types.Float):
    """Build an intrinsic reinterpreting an integer's low bits as ``ftype``.

    Numba's integer typing widens ``int32 op int32`` to int64, so the float32 variant accepts
    any integer and truncates (see ``_log_f32`` for keeping such arithmetic in i32 lanes).
    """
    width = ftype.bitwidth

    @intrinsic
    def _bits_to_float(typingctx, i):
        if not isinstance(i, types.Integer):
            return None

        def codegen(context, builder, sig, args):
            ity = context.get_value_type(types.int64 if width == 64 else types.int32)
            val = args[0]
            if i.bitwidth > width:
                val = builder.trunc(val, ity)
            elif i.bitwidth < width:
                val = builder.sext(val, ity) if i.signed else builder.zext(val, ity)
            return builder.bitcast(val, context.get_value_type(ftype))

        return ftype(i), codegen

    return _bits_to_float


_f64_from_bits = _bits_to_float_intrinsic(types.float64)
_f32_from_bits = _bits_to_float_intrinsic(types.float32)


@intrinsic
def _srl(typingctx, i, n):
    """``i >> n`` as a logical shift (zeros shifted in) by a constant ``n``, in ``i``'s type.

    Numba's ``>>`` on int64 is arithmetic, which AVX2 has no 64-bit instruction for (LLVM
    emulates it with four), and it widens int32 to int64.  Used on the bits of a float whose
    sign is clear wherever the result is used."""
    if not (isinstance(i, types.Integer) and isinstance(n, types.IntegerLiteral)):
        return None

    def codegen(context, builder, sig, args):
        return builder.lshr(args[0], ir.Constant(args[0].type, sig.args[1].literal_value))

    return i(i, n), codegen

# a*b + c as ``llvm.fmuladd``: LLVM may fuse it into one FMA where the target has one (and
# never calls libm ``fma``), or emit a separate multiply and add.  Only used where the error
# analysis holds for both, so results may differ in the last bit between targets but the
# accuracy bounds do not.  LOSSDSL_VECTOR_MATH_FMA=0 forces the unfused form (read at import).
_USE_FMULADD = os.environ.get("LOSSDSL_VECTOR_MATH_FMA", "1") != "0"


@intrinsic
def row_add(typingctx, a, b):
    """``a + b`` as an ``fadd reassoc`` (``b`` widened to ``a``'s type first): a sum that a
    loop accumulates with it may be reassociated, split into SIMD lanes, although the
    function is compiled without fast-math, so the loops over a row's classes in a kernel
    body vectorise while the rest of its arithmetic stays strict. Only the order of the sum's
    additions changes (its last bits). Since the bodies are strict in earnest (2026-11-29;
    before, they took their loop driver's fast-math by accident), a row's strict sum kept
    sparse_cce_logits over 1,000 classes at twice its earlier time."""
    if not (isinstance(a, types.Float) and isinstance(b, types.Float)
            and a.bitwidth >= b.bitwidth):
        return None

    def codegen(context, builder, sig, args):
        item = context.cast(builder, args[1], sig.args[1], sig.args[0])
        return builder.fadd(args[0], item, flags=("reassoc",))

    return a(a, b), codegen


@intrinsic
def row_max(typingctx, a, b):
    """The larger of ``a`` and ``b``, NaN if either is (``llvm.maximum``, whose reductions
    vectorise without fast-math; +0 counts as larger than -0)."""
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, sig, args):
        fty = args[0].type
        fn = builder.module.declare_intrinsic("llvm.maximum", [fty],
                                              fnty=ir.FunctionType(fty, [fty, fty]))
        return builder.call(fn, args)

    return a(a, b), codegen


@intrinsic
def _mla(typingctx, a, b, c):
    """a*b + c, optionally fused (see _USE_FMULADD)."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, sig, args):
        if not _USE_FMULADD:
            return builder.fadd(builder.fmul(args[0], args[1]), args[2])
        fty = args[0].type
        fn = builder.module.declare_intrinsic(
            "llvm.fmuladd", [fty], fnty=ir.FunctionType(fty, [fty, fty, fty])
        )
        return builder.call(fn, args)

    return a(a, b, c), codegen


# --------------------------------------------------------------------------------------------
# float64 constants (plain Python floats/ints are typed float64/int64 by Numba).
# --------------------------------------------------------------------------------------------

_INV_LN2 = 1.4426950408889634
# ln2 split: _LN2_HI has 32 significant bits, so k * _LN2_HI is exact for |k| < 2**21.
_LN2_HI = float.fromhex("0x1.62e42fee00000p-1")
_LN2_LO = float.fromhex("0x1.a39ef35793c76p-33")
# Adding 1.5 * 2**52 rounds to an integer (ties to even) and leaves it in the low mantissa
# bits: bits(x + SHIFT) - bits(SHIFT) == round(x) for |x| < 2**51.
_SHIFT = 6755399441055744.0
_SHIFT_BITS = 0x4338000000000000
# Clamp range for the exp argument: beyond it the result is 0/inf anyway, and it keeps both
# scale factors 2**(k>>1), 2**(k - (k>>1)) normal (|k| <= 1097).
_EXP_LO = -760.0
_EXP_HI = 720.0
# expm1: below -45, expm1 == -1.0 in float64; 710 is past the overflow threshold (709.78).
_EXPM1_LO = -45.0
_EXPM1_HI = 710.0

# Minimax for Q(r) = (exp(r) - 1 - r) / r**2 on [-0.3467, 0.3467], rel. error 2**-57.2.
_E0 = 0.5
_E1 = 0.1666666666666667
_E2 = 0.041666666666666616
_E3 = 0.008333333333326146
_E4 = 0.0013888888888918044
_E5 = 0.00019841269874794
_E6 = 2.480158724561918e-05
_E7 = 2.7557255421302667e-06
_E8 = 2.755734966524766e-07
_E9 = 2.5105212329672105e-08
_E10 = 2.088938254107312e-09

# fdlibm e_log.c: |log(1+s) - log(1-s) - (2s + s*Lg(s*s))| < 2**-58.45 on s in [0, 0.1716].
_LG1 = 6.666666666666735130e-01
_LG2 = 3.999999999940941908e-01
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01

_TWO54 = 18014398509481984.0
_DBL_MIN = 2.2250738585072014e-308
_MANT_MASK = 0x000FFFFFFFFFFFFF
# Adding (0x3ff00000 - 0x3fe6a09e) << 32 to the bits carries into the exponent exactly when the
# mantissa is >= sqrt(2) (0x3ff6a09e...), so the normalised mantissa lands in [sqrt2/2, sqrt2).
_SQRT2_OFFSET = (0x3FF00000 - 0x3FE6A09E) << 32
_SQRT2_HALF_BITS = 0x3FE6A09E << 32
_TINY_LOG1P = 5.551115123125783e-17  # 2**-54: log1p(x) rounds to x below this

_INF = np.inf
_NAN = np.nan

# --------------------------------------------------------------------------------------------
# float32 constants.  Every literal in the float32 kernels must be an np.float32/np.int32
# global: a bare Python float would promote the whole expression to float64.
# --------------------------------------------------------------------------------------------

_f = np.float32
_F_ZERO = _f(0.0)
_F_HALF = _f(0.5)
_F_ONE = _f(1.0)
_F_TWO = _f(2.0)
_F_INV_LN2 = _f(1.4426950408889634)
# ln2 split with 15 significant bits in the high part: k * hi exact for |k| < 2**9.
_F_LN2_HI = _f(0.693145751953125)  # 0x3f317200
_F_LN2_LO = _f(1.428606765330187e-06)  # 0x35bfbe8e
_F_SHIFT = _f(12582912.0)  # 1.5 * 2**23
_F_SHIFT_SUB25 = _f(12582937.0)  # _F_SHIFT + 25: the exponent of a subnormal scaled by 2**25
_F_SHIFT_BITS = 0x4B400000
_F_EXP_LO = _f(-110.0)
_F_EXP_HI = _f(90.0)
_F_EXPM1_LO = _f(-20.0)  # expm1f == -1 below ~-17.3
_F_EXPM1_HI = _f(89.0)  # past the overflow threshold 88.72

# Minimax for Q(r) on [-0.3467, 0.3467] in float32 coefficients, rel. error 2**-26.5.
_FE0 = _f(0.5)
_FE1 = _f(0.1666666716337204)
_FE2 = _f(0.04166646674275398)
_FE3 = _f(0.008333360776305199)
_FE4 = _f(0.0013933629961684346)
_FE5 = _f(0.00019857811275869608)

# musl logf.c: |(log(1+s) - log(1-s))/s - Lg(s)| < 2**-34.24.
_F_LN2_HI_LOG = _f(6.9313812256e-01)  # 0x3f317180
_F_LN2_LO_LOG = _f(9.0580006145e-06)  # 0x3717f7d1
_FLG1 = _f(0.66666662693)  # 0xaaaaaa.0p-24
_FLG2 = _f(0.40000972152)  # 0xccce13.0p-25
_FLG3 = _f(0.28498786688)  # 0x91e9ee.0p-25
_FLG4 = _f(0.24279078841)  # 0xf89e26.0p-26

_F_TWO25 = _f(33554432.0)
_F_FLT_MIN = _f(1.1754943508222875e-38)
_F_MANT_MASK = 0x007FFFFF
_F_SQRT2_OFFSET = 0x3F800000 - 0x3F3504F3
_F_SQRT2_HALF_BITS = 0x3F3504F3
_F_TINY_LOG1P = _f(5.960464477539063e-08)  # 2**-24
_F_INF = _f(np.inf)
_F_NINF = _f(-np.inf)
_F_NAN = _f(np.nan)
_i32 = np.int32

del _f

# --------------------------------------------------------------------------------------------
# float64 kernels
# --------------------------------------------------------------------------------------------


@njit(**_JIT_OPTS)
def _clamp(x, lo, hi):
    """Clamp to [lo, hi], passing nan through.

    Written as comparisons that are false for nan (not min/max, whose nan behaviour is not
    guaranteed); LLVM turns them into nan-preserving selects / masked vmaxpd.
    """
    x = hi if x > hi else x  # noqa: FURB136
    return lo if x < lo else x  # noqa: FURB136


@njit(**_JIT_OPTS)
def _exp_reduce_f64(x):
    """Split x = k*ln2 + r + c and return (k, r, e) with expm1(x - k*ln2) ~= r + e.

    x must be pre-clamped (nan passes through).  e = r*r*Q(r) + c is small next to r, so
    callers add the large, exactly known terms first and e last.
    """
    # k is any integer next to x/ln2 (|r| <= ln2/2 + 2**-40 whether or not the multiply-add
    # is fused); r below is computed from the k chosen, exactly.
    t = _mla(x, _INV_LN2, _SHIFT)
    k = _float_bits(t) - _SHIFT_BITS
    kd = t - _SHIFT  # == float(k), exactly
    # Cody-Waite: kd*_LN2_HI is exact and so is x - kd*_LN2_HI (Sterbenz), fused or not.  The
    # rounding error c of the second subtraction is recovered exactly (Fast2Sum) and fed back
    # below; expm1 needs it when 2**k * r and 2**k - 1 partially cancel (k >= 1, r < 0).
    rhi = _mla(-kd, _LN2_HI, x)
    rlo = kd * _LN2_LO
    r = rhi - rlo
    c = (rhi - r) - rlo
    # Estrin's scheme: a dependency chain of ~5 multiply-adds instead of 10 (Horner), which
    # matters because the vectorised loop is latency-bound, not throughput-bound.
    r2 = r * r
    r4 = r2 * r2
    q01 = _mla(r, _E1, _E0)
    q23 = _mla(r, _E3, _E2)
    q45 = _mla(r, _E5, _E4)
    q67 = _mla(r, _E7, _E6)
    q89 = _mla(r, _E9, _E8)
    q03 = _mla(r2, q23, q01)
    q47 = _mla(r2, q67, q45)
    q8a = _mla(r2, _E10, q89)
    q = _mla(r4 * r4, q8a, _mla(r4, q47, q03))
    return k, r, _mla(r2, q, c)


@njit(**_JIT_OPTS)
def _exp_f64(x):
    # Beyond the clamp range the result is 0 or inf anyway; nan propagates through arithmetic.
    x = _clamp(x, _EXP_LO, _EXP_HI)
    k, r, e = _exp_reduce_f64(x)
    # 2**k as two normal factors: s2 + s2*(r + e) = s2 * fl(1 + (r + e)) (s2*(r + e) is exact,
    # one rounding, fused or not), then the multiply by s1 is exact, or rounds once more into
    # the subnormal range, or gives inf on overflow.  A multiply-add and a multiply on the
    # critical path where an addition and two multiplies were (the same bits).
    k1 = k >> 1
    s1 = _f64_from_bits((k1 + 1023) << 52)
    s2 = _f64_from_bits((k - k1 + 1023) << 52)
    return _mla(s2, r + e, s2) * s1


@njit(**_JIT_OPTS)
def _expm1_f64(x):
    xc = _clamp(x, _EXPM1_LO, _EXPM1_HI)
    k, r, e = _exp_reduce_f64(xc)
    # expm1(x) = 2**k - 1 + 2**k*(r + e), evaluated in halves with h = 2**(k-1) so that
    # k = 1024 (x in [709.44, 709.78]) stays finite; the products by h are exact and the final
    # doubling is exact (or overflows to inf as it should).
    # k < 3: h - 0.5 is exact and h*r can cancel it (r < 0), so add the exact terms first and
    # the small e last.  k >= 3: no cancellation, and h - 0.5 would round for k >= 54, so fold
    # the -0.5 into the smaller term instead.
    h = _f64_from_bits((k - 1 + 1023) << 52)
    small_k = 2.0 * (((h - 0.5) + h * r) + h * e)
    large_k = 2.0 * (h + (h * (r + e) - 0.5))
    res = small_k if k < 3 else large_k
    # |x| < 2**-54: expm1(x) == x (also keeps -0.0 and subnormals exact).
    return x if abs(x) < _TINY_LOG1P else res


@njit(**_JIT_OPTS)
def _log_kernel_f64(m, dk, lo):
    """log(m) + dk*ln2 + lo for m in [sqrt2/2, sqrt2) and a small lo (fdlibm's reduction).

    With f = m - 1 (exact) and s = f/(m + 1) = f/(2 + f), log(m) = 2 atanh(s) = 2s + s*R(s*s)
    and 2s = f - s*f, so log(m) = f - (s*f - s**3*P(s*s)) with R(z) = z*P(z) (fdlibm's
    Lg1..Lg7, by Estrin's scheme).  s*f is the one large product: it enters the last
    multiply-add whole (with FMA unrounded), the small s**3 term and lo its addend; then f,
    exactly known, and dk*ln2_hi (an exact product) are added.  Four operations after the
    polynomial (s**3 beside it) where musl's ``s*(hfsq + R) + lo - hfsq + f + dk*ln2_hi``
    takes six (hfsq beside it), and Estrin's 12 cycles from s*s where fdlibm's odd/even
    Horner took 22; as accurate with FMA (0.80 ulp for log, 0.82 for log1p, as
    before), 0.91 without (was 0.80 and 0.84).  fdlibm's cheaper ``f - s*(f - R)`` rounds
    f - R, up to 0.89 ulp with FMA.
    """
    f = m - 1.0
    s = f / (m + 1.0)  # m + 1 from m, in parallel with f: one addition less on the chain
    z = s * s
    w = z * z
    p = _mla(w * w, _mla(w, _LG7, _mla(z, _LG6, _LG5)),
             _mla(w, _mla(z, _LG4, _LG3), _mla(z, _LG2, _LG1)))
    q = _mla(s, f, -_mla(s * z, p, lo))  # s*(f - R) - lo
    return _mla(dk, _LN2_HI, f - q)


@njit(**_JIT_OPTS)
def _int_to_f64(k):
    """Exact int64 -> float64 for |k| < 2**51 via the shifter (no cvtqq2pd needed on AVX2)."""
    return _f64_from_bits(k + _SHIFT_BITS) - _SHIFT


@njit(**_JIT_OPTS)
def _log_f64(x):
    # Subnormals: scale into the normal range so the exponent field is meaningful.
    sub = x < _DBL_MIN
    xs = x * _TWO54 if sub else x
    ix = _float_bits(xs) + _SQRT2_OFFSET
    # the exponent as a float: its bits added to the shifter's (logical shift: x > 0 wherever
    # the result is used), the bias and the subnormal scaling subtracted in float64 (exact)
    dk = _f64_from_bits(_srl(ix, 52) + (_SHIFT_BITS - 1023)) - (_SHIFT + 54.0 if sub else _SHIFT)
    m = _f64_from_bits((ix & _MANT_MASK) + _SQRT2_HALF_BITS)
    res = _log_kernel_f64(m, dk, dk * _LN2_LO)
    # Special cases as selects (the main path computed garbage for these inputs).
    res = x if not (x < _INF) else res  # +inf, nan
    res = -_INF if x == 0.0 else res
    return _NAN if x < 0.0 else res


@njit(**_JIT_OPTS)
def _log1p_f64(x):
    u = 1.0 + x
    iu = _float_bits(u) + _SQRT2_OFFSET
    dk = _f64_from_bits(_srl(iu, 52) + (_SHIFT_BITS - 1023)) - _SHIFT
    # The rounding error of u = fl(1 + x) and the first-order correction log(1+x) - log(u) =
    # c/u.  u - 1 is exact for u up to 2**53 (Sterbenz below 2, then both are multiples of
    # ulp(u)), so c is; beyond, c is 1 off (u - 1 rounds by 1) and c/u by at most 2**-53,
    # 1/64 ulp of the result (log(u) > 36).  For u already in [sqrt2/2, sqrt2) the kernel
    # gets m = u and c as for every u (no select for that case, as musl's branch has).
    c = (x - (u - 1.0)) / u
    m = _f64_from_bits((iu & _MANT_MASK) + _SQRT2_HALF_BITS)
    res = _log_kernel_f64(m, dk, _mla(dk, _LN2_LO, c))
    res = x if abs(x) < _TINY_LOG1P else res  # tiny, +-0, subnormal: log1p(x) == x
    res = res if x < _INF else x  # +inf, nan
    return res if x > -1.0 else (-_INF if x == -1.0 else _NAN)


# --------------------------------------------------------------------------------------------
# pow: exp(y * log|x|) with log|x| and the product carried in double-double
# --------------------------------------------------------------------------------------------

# Veltkamp's splitter 2**27 + 1: a = hi + lo with 26-bit halves, whose products are exact.
_SPLITTER = 134217729.0
# From 2**52 on every float64 is an integer (and from 2**53 on an even one).
_TWO52 = 4503599627370496.0
# |y log|x|| past which exp over- or underflows whatever the correction (exp(746) = inf,
# exp(-746) = 0): there the double-double correction is not computed (it may be inf - inf).
_POW_EXP_LIMIT = 746.0


@njit(**_INLINED_OPTS)
def _two_product(a, b):
    """(p, e) with p = fl(a*b) and a*b = p + e exactly (Dekker; no FMA needed, so the same
    bits on every CPU). |a|, |b| below 2**995."""
    p = a * b
    ca = _SPLITTER * a
    a_hi = ca - (ca - a)
    a_lo = a - a_hi
    cb = _SPLITTER * b
    b_hi = cb - (cb - b)
    b_lo = b - b_hi
    return p, ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo


# log(1 + f) = 2 atanh(s) = 2s + 2s^3/3 + s^5 (2/5 + 2/7 s^2 + ...) for s = f/(2 + f), |s| <=
# 0.1716: the Taylor coefficients to s^27 (the next term is below 2**-75 of the sum), the
# 2s^3/3 term in two parts as 2/3 is.
_TWO_THIRDS_HI = 0.6666666666666666
_TWO_THIRDS_LO = 3.700743415417188e-17
_ATANH2 = 0.4  # 2/5
_ATANH3 = 0.2857142857142857  # 2/7
_ATANH4 = 0.2222222222222222  # 2/9
_ATANH5 = 0.18181818181818182  # 2/11
_ATANH6 = 0.15384615384615385  # 2/13
_ATANH7 = 0.13333333333333333  # 2/15
_ATANH8 = 0.11764705882352941  # 2/17
_ATANH9 = 0.10526315789473684  # 2/19
_ATANH10 = 0.09523809523809523  # 2/21
_ATANH11 = 0.08695652173913043  # 2/23
_ATANH12 = 0.08  # 2/25
_ATANH13 = 0.07407407407407407  # 2/27


@njit(**_INLINED_OPTS)
def _two_sum(a, b):
    """(s, e) with s = fl(a + b) and a + b = s + e exactly (Knuth; any magnitudes)."""
    total = a + b
    b_part = total - a
    return total, (a - (total - b_part)) + (b - b_part)


@njit(**_INLINED_OPTS)
def _log_double_f64(x):
    """log(x) = hi + lo for finite x > 0, to about 2**-62 of log(x): fdlibm's reduction to
    m = 1 + f in [sqrt2/2, sqrt2) (k ln2 + log(1 + f)), s = f/(2 + f) in two parts, and the
    large terms k ln2_hi, 2s and 2s^3/3 added exactly (pow needs log|x| to more than float64's
    digits: an error e in y log|x| is a relative error e of the power)."""
    sub = x < _DBL_MIN
    xs = x * _TWO54 if sub else x
    ix = _float_bits(xs) + _SQRT2_OFFSET
    k = (ix >> 52) - (1023 + 54 if sub else 1023)
    f = _f64_from_bits((ix & _MANT_MASK) + _SQRT2_HALF_BITS) - 1.0  # exact
    d = 2.0 + f
    d_lo = f - (d - 2.0)  # 2 + f = d + d_lo exactly (|f| < 2)
    s = f / d
    product, product_lo = _two_product(s, d)
    s_lo = (((f - product) - product_lo) - s * d_lo) / d
    z, z_lo = _two_product(s, s)
    cube, cube_lo = _two_product(s, z)
    cube_lo = cube_lo + (s * z_lo + 3.0 * z * s_lo)
    third, third_lo = _two_product(cube, _TWO_THIRDS_HI)
    third_lo = third_lo + (cube * _TWO_THIRDS_LO + cube_lo * _TWO_THIRDS_HI)
    z2 = z * z
    z4 = z2 * z2
    # Estrin's scheme over z: short dependency chains
    rest = cube * z * _mla(z4 * z4, _mla(z2, _mla(z, _ATANH13, _ATANH12), _mla(z, _ATANH11,
                                                                          _ATANH10)),
                           _mla(z4, _mla(z2, _mla(z, _ATANH9, _ATANH8), _mla(z, _ATANH7, _ATANH6)),
                                _mla(z2, _mla(z, _ATANH5, _ATANH4), _mla(z, _ATANH3, _ATANH2))))
    dk = _int_to_f64(k)
    hi, error = _two_sum(dk * _LN2_HI, 2.0 * s)  # dk * ln2_hi is exact
    hi, error2 = _two_sum(hi, third)
    lo = (error + error2) + (2.0 * s_lo + (third_lo + (rest + dk * _LN2_LO)))
    total = hi + lo
    return total, lo - (total - hi)


@njit(**_INLINED_OPTS)
def _is_integer_f64(a):
    """Whether float64 ``a`` is an integer (False for NaN, True for +-inf): from 2**52 on every
    float64 is one; below, adding 2**52 rounds |a| to an integer. Bitwise ``|`` and ``&`` on
    the comparisons, not ``or``/``and``, whose short-circuit branches stop vectorisation."""
    magnitude = abs(a)
    return (magnitude >= _TWO52) | (((magnitude + _TWO52) - _TWO52) == magnitude)


@njit(**_INLINED_OPTS)
def _pow_f64(x, y):
    magnitude = abs(x)
    finite = (magnitude < _INF) & (magnitude > 0.0)
    log_hi, log_lo = _log_double_f64(magnitude if finite else 1.0)
    # y * log|x| = p + p_lo exactly, then exp(p) (1 + p_lo + y log_lo)
    p, p_lo = _two_product(y, log_hi)
    power = _exp_f64(p)
    # past exp's range the result is 0 or inf (and inf * 0 would be nan)
    corrected = (abs(p) < _POW_EXP_LIMIT) & (power < _INF)
    res = power + power * (p_lo + y * log_lo) if corrected else power
    # |x| = 0 or inf: y log|x| is -inf or +inf, so 0 or inf; nan stays nan; |x| = 1: 1
    special = _INF if (y > 0.0) == (magnitude > 1.0) else 0.0
    special = _NAN if (magnitude != magnitude) | (y != y) else special
    res = res if finite else special
    res = 1.0 if magnitude == 1.0 else res
    # the sign, the domain and the special values of C99's pow, as selects
    y_integer = _is_integer_f64(y)
    y_odd = y_integer & (_is_integer_f64(0.5 * y) == False)  # noqa: E712
    res = -res if (_float_bits(x) < 0) & y_odd else res
    res = _NAN if (x < 0.0) & (x > -_INF) & (y_integer == False) else res  # noqa: E712
    return 1.0 if (x == 1.0) | (y == 0.0) else res


@njit(**_INLINED_OPTS)
def _pow_f32(x, y):
    # float64 carries 29 more bits than float32 needs: one rounding at the end
    return np.float32(_pow_f64(np.float64(x), np.float64(y)))


# --------------------------------------------------------------------------------------------
# float32 kernels (same algorithms, float32 arithmetic, int32 bit fields)
# --------------------------------------------------------------------------------------------


@njit(**_JIT_OPTS)
def _exp_reduce_f32(x):
    t = _mla(x, _F_INV_LN2, _F_SHIFT)
    k = _float_bits(t) - _F_SHIFT_BITS
    kd = t - _F_SHIFT
    rhi = _mla(-kd, _F_LN2_HI, x)
    rlo = kd * _F_LN2_LO
    r = rhi - rlo
    c = (rhi - r) - rlo
    r2 = r * r
    q01 = _mla(r, _FE1, _FE0)
    q23 = _mla(r, _FE3, _FE2)
    q45 = _mla(r, _FE5, _FE4)
    q = _mla(r2 * r2, q45, _mla(r2, q23, q01))
    return k, r, _mla(r2, q, c)


@njit(**_JIT_OPTS)
def _exp_f32(x):
    x = _clamp(x, _F_EXP_LO, _F_EXP_HI)
    k, r, e = _exp_reduce_f32(x)
    k1 = k >> 1
    s1 = _f32_from_bits((k1 + 127) << 23)
    s2 = _f32_from_bits((k - k1 + 127) << 23)
    return _mla(s2, r + e, s2) * s1


@njit(**_JIT_OPTS)
def _expm1_f32(x):
    xc = _clamp(x, _F_EXPM1_LO, _F_EXPM1_HI)
    k, r, e = _exp_reduce_f32(xc)
    h = _f32_from_bits((k - 1 + 127) << 23)
    small_k = _F_TWO * (((h - _F_HALF) + h * r) + h * e)
    large_k = _F_TWO * (h + (h * (r + e) - _F_HALF))
    res = small_k if k < 3 else large_k
    return x if abs(x) < _F_TINY_LOG1P else res


@njit(**_JIT_OPTS)
def _log_kernel_f32(m, dk, lo):
    """:func:`_log_kernel_f64` in float32 with musl's ``logf`` polynomial (Lg1..Lg4)."""
    f = m - _F_ONE
    s = f / (m + _F_ONE)
    z = s * s
    p = _mla(z * z, _mla(z, _FLG4, _FLG3), _mla(z, _FLG2, _FLG1))
    q = _mla(s, f, -_mla(s * z, p, lo))
    return _mla(dk, _F_LN2_HI_LOG, f - q)


@njit(**_JIT_OPTS)
def _log_f32(x):
    sub = x < _F_FLT_MIN
    xs = x * _F_TWO25 if sub else x
    # np.int32(...) after each step: Numba widens int32 arithmetic to int64, and only explicit
    # truncation lets LLVM keep 16 x i32 lanes instead of splitting into 2 x (8 x i64).
    ix = _i32(_float_bits(xs) + _F_SQRT2_OFFSET)
    dk = (_f32_from_bits(_i32(_srl(ix, 23) + (_F_SHIFT_BITS - 127)))
          - (_F_SHIFT_SUB25 if sub else _F_SHIFT))
    m = _f32_from_bits(_i32(ix & _F_MANT_MASK) + _F_SQRT2_HALF_BITS)
    res = _log_kernel_f32(m, dk, dk * _F_LN2_LO_LOG)
    res = x if not (x < _F_INF) else res
    res = _F_NINF if x == _F_ZERO else res
    return _F_NAN if x < _F_ZERO else res


@njit(**_JIT_OPTS)
def _log1p_f32(x):
    u = _F_ONE + x
    iu = _i32(_float_bits(u) + _F_SQRT2_OFFSET)
    dk = _f32_from_bits(_i32(_srl(iu, 23) + (_F_SHIFT_BITS - 127))) - _F_SHIFT
    c = (x - (u - _F_ONE)) / u  # exact for u up to 2**24, beyond 1/32 ulp of the result off
    m = _f32_from_bits(_i32(iu & _F_MANT_MASK) + _F_SQRT2_HALF_BITS)
    res = _log_kernel_f32(m, dk, _mla(dk, _F_LN2_LO_LOG, c))
    res = x if abs(x) < _F_TINY_LOG1P else res
    res = res if x < _F_INF else x
    return res if x > -_F_ONE else (_F_NINF if x == -_F_ONE else _F_NAN)


_TANH_TINY = 2.0**-28  # tanh(x) rounds to x below this (x^3/3 < half an ulp of x)
_TANH_ONE = 22.0  # tanh(x) rounds to 1 from here on (fdlibm's threshold)
_F_TANH_TINY = np.float32(2.0**-12)
_F_TANH_ONE = np.float32(9.0)


@njit(**_JIT_OPTS)
def _tanh_f64(x):
    a = abs(x)
    small = a < 1.0
    t = _expm1_f64(-2.0 * a if small else 2.0 * (a if a < _TANH_ONE else _TANH_ONE))
    q = (-t if small else 2.0) / (t + 2.0)
    z = q if small else 1.0 - q
    z = 1.0 if a >= _TANH_ONE else z
    res = -z if x < 0.0 else z
    res = x if a < _TANH_TINY else res  # tiny, +-0, subnormal: tanh(x) == x
    return x if x != x else res


@njit(**_JIT_OPTS)
def _tanh_f32(x):
    a = abs(x)
    small = a < _F_ONE
    t = _expm1_f32(-_F_TWO * a if small else _F_TWO * (a if a < _F_TANH_ONE else _F_TANH_ONE))
    q = (-t if small else _F_TWO) / (t + _F_TWO)
    z = q if small else _F_ONE - q
    z = _F_ONE if a >= _F_TANH_ONE else z
    res = -z if x < _F_ZERO else z
    res = x if a < _F_TANH_TINY else res
    return x if x != x else res


# --------------------------------------------------------------------------------------------
# Type-generic public entry points.  An @overload'ed stub picks the kernel from the argument
# type at compile time; the thin @njit wrapper makes it callable from Python as well.
# --------------------------------------------------------------------------------------------


def _make_generic(name: str, impl64: Dispatcher, impl32: Dispatcher, doc: str,
                  opts: dict = _JIT_OPTS) -> Dispatcher:
    """A type-generic ``name(x)``; ``opts`` the Numba options of its dispatch and wrapper
    (``_INLINED_OPTS`` for a kernel that LLVM's inliner would leave a call, which stops a
    loop vectorising)."""

    def stub(x):  # pragma: no cover - only ever compiled
        raise NotImplementedError(f"{name} is only callable via Numba")

    stub.__name__ = f"_{name}_dispatch"

    @overload(stub, jit_options=opts)
    def _ol(x):
        if isinstance(x, types.Float) and x.bitwidth == 32:
            return lambda x: impl32(x)
        if isinstance(x, (types.Float, types.Integer, types.Boolean)):
            return lambda x: impl64(np.float64(x))
        return None

    def generic(x):
        return stub(x)

    generic.__name__ = generic.__qualname__ = name
    generic.__doc__ = doc
    return njit(**opts)(generic)


def _make_generic2(name: str, impl64: Dispatcher, impl32: Dispatcher, doc: str) -> Dispatcher:
    """:func:`_make_generic` for a function of two arguments: float32 when both are float32
    (or one is and the other an integer), float64 otherwise."""

    def stub(x, y):  # pragma: no cover - only ever compiled
        raise NotImplementedError(f"{name} is only callable via Numba")

    stub.__name__ = f"_{name}_dispatch"
    numbers = (types.Float, types.Integer, types.Boolean)

    @overload(stub, jit_options=_INLINED_OPTS)
    def _ol(x, y):
        if not (isinstance(x, numbers) and isinstance(y, numbers)):
            return None
        floats = [t for t in (x, y) if isinstance(t, types.Float)]
        if floats and all(t.bitwidth == 32 for t in floats):
            return lambda x, y: impl32(np.float32(x), np.float32(y))
        return lambda x, y: impl64(np.float64(x), np.float64(y))

    def generic(x, y):
        return stub(x, y)

    generic.__name__ = generic.__qualname__ = name
    generic.__doc__ = doc
    return njit(**_INLINED_OPTS)(generic)


vexp = _make_generic(
    "vexp",
    _exp_f64,
    _exp_f32,
    "exp(x); overflow -> inf, subnormal results rounded once, exp(-inf) = 0, nan -> nan.",
)
vexpm1 = _make_generic(
    "vexpm1",
    _expm1_f64,
    _expm1_f32,
    "expm1(x) = exp(x) - 1 without cancellation; -0.0 and tiny x returned exactly.",
)
vlog = _make_generic(
    "vlog",
    _log_f64,
    _log_f32,
    "log(x); log(0) = -inf, log(x<0) = nan, log(inf) = inf, subnormal x handled.",
)
vtanh = _make_generic(
    "vtanh",
    _tanh_f64,
    _tanh_f32,
    "tanh(x); tanh(+-inf) = +-1, -0.0 and tiny x returned exactly, nan -> nan.",
    # expm1 and a division: past LLVM's inlining threshold (its loop was left a call)
    _INLINED_OPTS,
)
vpow = _make_generic2(
    "vpow",
    _pow_f64,
    _pow_f32,
    "x ** y with C99 pow's special values (NaN for a negative x and a non-integer y, "
    "pow(x, 0) = pow(1, y) = 1, signed zeros and infinities for odd integer y).",
)
vlog1p = _make_generic(
    "vlog1p",
    _log1p_f64,
    _log1p_f32,
    "log1p(x) = log(1 + x); log1p(-1) = -inf, x < -1 -> nan, log1p(-0.0) = -0.0.",
)
