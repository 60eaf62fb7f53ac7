"""Def requirements (``def aft(y, z, y_upper=y) requires y_upper >= y = ...``): conditions on
a def's arguments together, which declared domains (one parameter at a time) cannot say.
Decided when the loss is compiled where numbers decide them, checked at every call where they
read params or inputs, on every path a call can take (the general one, the planned small
call, parallel kernels, Dask chunks, JAX, device arrays under the CUDA simulator), so that an
interval-censored label whose upper end is below its lower end, or a zero count given to a
Tweedie loss of power 2.5, is an error naming the first row, not a silently wrong number."""

import pickle

import numpy as np
import pytest

import lossdsl
from lossdsl import catalog
from lossdsl.frontend.resolve import resolve_text

DEFS = """
def band(y, z, u = y) requires u >= y = (z - y)^2 + (z - u)^2
def scaled(y, z, s = 1) requires s > 0 and s <= 10 = s*(z - y)^2
def rows(y, z, floor = 0) requires rowsum(z) >= floor = rowsum((z - y)^2)
"""


@pytest.fixture(scope="module")
def band():
    return lossdsl.compile(DEFS + "band(y, z, u)")


def test_the_condition_and_its_parts_are_read_back():
    scope = resolve_text(DEFS + "loss l = band(lo, z, hi)\nloss same = band(y, z)\n")
    (requirement,) = scope.losses["l"].requirements
    assert requirement.text == "u >= y" and requirement.function == "band"
    assert str(requirement.condition) == "hi >= lo"
    assert [(name, str(bound)) for name, bound in requirement.arguments] == [
        ("y", "lo"), ("u", "hi")]
    assert requirement.declared.line == 2 and requirement.called.line == 5
    assert str(scope.losses["same"].requirements[0].condition) == "y >= y"  # NaN still fails
    assert scope.defs["band"].syntax.requirement.condition is not None


@pytest.mark.parametrize("text, message", [
    ("def f(y) requires = y\nf(y)\n", "1:19"),
    ("def f(y) requires y > 0\nf(y)\n", "1:24: unexpected end of line"),
    ("def f(y) requires z > 0 = y\nf(y)\n", "unknown name 'z'"),
    ("def f(y, z) requires pick(z, 0) > 0 = y\nf(y, z)\n",
     "1:13: a requirement may use elementwise operations and rowsum"),
])
def test_bad_requirements_are_positioned_errors(text, message):
    with pytest.raises(lossdsl.LossError, match=message):
        lossdsl.compile(text)


def test_numbers_decide_it_when_the_loss_is_compiled():
    assert lossdsl.compile(DEFS + "scaled(y, z, 2)").requirements() == ()
    with pytest.raises(lossdsl.LossDomainError) as caught:
        lossdsl.compile(DEFS + "scaled(y, z, 20)")
    text = str(caught.value)
    assert "scaled requires s > 0 and s <= 10" in text and "false: s = 20" in text
    assert text.splitlines()[1].strip() == "scaled(y, z, 20)"  # the caret line: the call
    with pytest.raises(lossdsl.LossDomainError, match="false: s = nan"):
        lossdsl.compile(DEFS + "scaled(y, z, nan)")


def test_array_inputs_are_checked_on_both_call_paths(band):
    y, z = np.array([1.0, 2.0, 3.0]), np.zeros(3)
    for _ in range(3):  # the first call plans; later calls of the signature take the plan
        assert band(y=y, z=z, u=y + 1) == pytest.approx((14 + 29) / 3)
        for call in (band, lambda **k: band.grad("z", **k), lambda **k: band.hessian("z", **k),
                     lambda **k: band.grad_and_hessian("z", **k)):
            with pytest.raises(lossdsl.LossDomainError,
                               match=r"band requires u >= y, which is false at index 1: "
                                     r"y = 2, u = 1\.5\n"):
                call(y=y, z=z, u=np.array([1.0, 1.5, 3.0]))
            with pytest.raises(lossdsl.LossDomainError, match="at index 2: y = 3, u = nan"):
                call(y=y, z=z, u=np.array([1.0, 2.0, np.nan]))


def test_the_error_names_the_callers_inputs_and_points_at_the_call():
    loss = lossdsl.compile(DEFS + "band(lo, z, hi)")
    with pytest.raises(lossdsl.LossDomainError) as caught:
        loss(lo=np.array([2.0]), z=np.zeros(1), hi=np.array([1.0]))
    assert ("y = 2 (the input 'lo'), u = 1 (the input 'hi')" in str(caught.value)
            and caught.value.span.line == 5 and caught.value.span.column == 1)


def test_a_pickled_loss_keeps_its_requirements(band):
    copy = pickle.loads(pickle.dumps(band))  # as Dask workers and multiprocessing get it
    assert [r.text for r in copy.requirements()] == ["u >= y"]
    with pytest.raises(lossdsl.LossDomainError, match="at index 0: y = 2, u = 1"):
        copy(y=np.array([2.0]), z=np.zeros(1), u=np.array([1.0]))


def test_params_and_scalars_are_checked_before_every_call():
    loss = lossdsl.compile("param k = 2\n" + DEFS + "scaled(y, z, k)")
    y, z = np.array([1.0, 2.0]), np.zeros(2)
    assert [str(r.condition) for r in loss.requirements()] == ["k <= 10 and k > 0"]
    for _ in range(2):
        assert loss(y=y, z=z) == pytest.approx(5.0)
        with pytest.raises(lossdsl.LossDomainError, match="false: s = -1 \\(the param 'k'\\)"):
            loss(y=y, z=z, k=-1.0)
    scalar = lossdsl.compile(DEFS + "band(y, z, 3)")
    with pytest.raises(lossdsl.LossDomainError, match="at index 1: y = 4, u = 3"):
        scalar(y=np.array([1.0, 4.0]), z=np.zeros(2))
    both = lossdsl.compile(DEFS + "band(y, z, u)")
    with pytest.raises(lossdsl.LossDomainError, match="false: y = 2, u = 1"):
        both(y=2.0, z=np.zeros(3), u=1.0)  # scalar inputs only: checked on the host


def test_matrices_report_the_row():
    loss = lossdsl.compile(DEFS + "rows(y, z, floor)")
    y, z = np.zeros((4, 3)), np.ones((4, 3))
    assert loss(y=y, z=z, floor=np.zeros(4)) == pytest.approx(3.0)
    z[2, 1] = -5.0
    with pytest.raises(lossdsl.LossDomainError,
                       match=r"at index 2: z = \[1, -5, 1\], floor = 0\n"):
        loss.grad("z", y=y, z=z, floor=np.zeros(4))


def test_lets_carry_their_requirements_and_condition_inputs_are_inputs():
    scope = resolve_text(DEFS + "let b = band(y, z, hi)\nloss l = 2*b\n"
                         "def only(y, z, u) requires u >= 0 = (z - y)^2\nloss o = only(y, z, w)\n")
    assert [str(r.condition) for r in scope.losses["l"].requirements] == ["hi >= y"]
    assert scope.losses["o"].inputs == ("y", "z", "w")  # w: read by the condition alone
    loss = lossdsl.compile(DEFS + "def only(y, z, u) requires u >= 0 = (z - y)^2\nonly(y, z, w)")
    with pytest.raises(lossdsl.LossDomainError, match="at index 0: u = -1"):
        loss(y=np.zeros(2), z=np.ones(2), w=np.array([-1.0, 1.0]))


def test_parallel_kernels_count_where_it_fails():
    loss = lossdsl.compile(DEFS + "band(y, z, u)", target="parallel")
    y = np.arange(100_000.0)
    u = y.copy()
    assert loss(y=y, z=y, u=u) == 0.0
    u[60_000] -= 1
    for _ in range(2):
        with pytest.raises(lossdsl.LossDomainError, match="at index 60000"):
            loss.grad("z", y=y, z=y, u=u)


def test_the_library_refuses_what_its_references_refuse():
    y, z = np.array([1.0, 2.0, 3.0]), np.zeros(3)
    for name in ("aft_normal", "aft_logistic", "aft_extreme"):
        assert catalog.entry(name).requirement == "y_upper >= y and y_upper > 0"
        loss = lossdsl.compile(f"{name}(y, z, y_upper)")
        assert np.isfinite(loss(y=y, z=z, y_upper=np.array([1.0, np.inf, 4.0])))
        with pytest.raises(lossdsl.LossDomainError, match="at index 2: y = 3, y_upper = 2"):
            loss.grad("z", y=y, z=z, y_upper=np.array([1.0, np.inf, 2.0]))
        # an event at time 0 has no density under log T: its gradient was NaN, and an
        # XGBoost model trained on it predicted NaN for every row (survival:aft clips)
        with pytest.raises(lossdsl.LossDomainError, match="at index 0: y = 0, y_upper = 0"):
            loss.grad("z", y=np.array([0.0, 2.0]), z=z[:2], y_upper=np.array([0.0, 2.0]))
        assert np.isfinite(loss(y=np.zeros(2), z=z[:2], y_upper=np.array([1.0, np.inf])))
        assert np.isfinite(lossdsl.compile(f"{name}(y, z)")(y=y, z=z))
    counts = np.array([0.0, 1.0, 4.0])
    assert lossdsl.compile("tweedie(y, z)").requirements() == ()  # rho = 1.5 decides it
    assert np.isfinite(lossdsl.compile("tweedie(y, z, 1.5)")(y=counts, z=z))
    gamma_like = lossdsl.compile("tweedie(y, z, 2.5)")
    with pytest.raises(lossdsl.LossDomainError, match="at index 0: y = 0"):
        gamma_like(y=counts, z=z)  # scikit-learn: y > 0 from power 2 on
    assert np.isfinite(gamma_like(y=counts + 1, z=z))
    with pytest.raises(lossdsl.LossDomainError, match="false: rho = 0.5"):
        lossdsl.compile("tweedie(y, z, 0.5)")  # no Tweedie distribution: scikit-learn refuses
    assert np.isfinite(lossdsl.compile("tweedie(y, z, 0)")(y=counts, z=z))
    powered = lossdsl.compile("param rho = 1.5\ntweedie(y, z, rho)")
    with pytest.raises(lossdsl.LossDomainError, match="at index 0: y = 0, rho = 3"):
        powered(y=counts, z=z, rho=3.0)


def test_the_catalog_shows_the_requirement():
    entry = catalog.entry("aft_normal")
    assert entry.signature.endswith(") requires y_upper >= y and y_upper > 0")
    assert entry.formula.startswith("where(y == y_upper, log(sigma*y)")
    assert catalog.entry("huber").requirement == ""


def test_the_boosting_probe_leaves_out_the_rows_that_fail():
    """The Hessian-policy probe pairs a grid of labels (up to 100) with the given per-row
    upper ends; rows where the upper end is below the label are left out, not refused (a
    refusal read as "flat somewhere" and chose the constant Hessian)."""
    from lossdsl.boosting.objective import BoostingObjective

    y = np.linspace(0.5, 2.0, 50)
    loss = lossdsl.compile("aft_normal(y, z, y_upper)")
    met = loss.rows_meeting_requirements(
        {"y": np.array([0.5, 9.0]), "z": np.zeros(2), "y_upper": np.array([1.0, 1.0])})
    assert met.tolist() == [True, False]
    objective = BoostingObjective(loss, inputs={"y_upper": 1.1 * y}, rows=y)
    assert not objective._flat_on_a_region() and objective.policy == "floor"
    assert lossdsl.compile("huber(y, p)").rows_meeting_requirements({"y": y}) is None


def test_dask_checks_every_chunk():
    da = pytest.importorskip("dask.array")
    import lossdsl.dask as ld

    loss = ld.compile(DEFS + "band(y, z, u)")
    y, z = np.arange(40.0), np.zeros(40)
    u = y + 1
    chunked = {"y": da.from_array(y, chunks=10), "z": da.from_array(z, chunks=10)}
    assert float(loss(**chunked, u=da.from_array(u, chunks=10))) == pytest.approx(
        float(np.mean(y**2 + u**2)))
    u[33] = 0.0
    with pytest.raises(lossdsl.LossDomainError, match="at index 33: y = 33, u = 0"):
        float(loss(**chunked, u=da.from_array(u, chunks=15)))  # chunks of other rows
    rows = ld.compile(DEFS + "rows(y, z, floor)")
    matrix = np.ones((40, 3))
    matrix[21, 0] = -9.0
    with pytest.raises(lossdsl.LossDomainError, match=r"at index 21: z = \[-9, 1, 1\]"):
        float(rows(y=np.zeros((40, 3)), z=da.from_array(matrix, chunks=(8, 3)),
                   floor=da.zeros(40, chunks=20)))


def test_jax_raises_for_concrete_values_and_makes_traced_ones_nan():
    jax = pytest.importorskip("jax")
    import lossdsl.jax as lj

    band = lj.loss(DEFS + "band(y, z, u)", reduction="none")
    y, z = np.array([1.0, 2.0, 3.0]), np.zeros(3)
    np.testing.assert_allclose(band(y, z, u=y), 2 * y**2)
    bad = np.array([1.0, 1.0, 3.0])
    with pytest.raises(lossdsl.LossDomainError, match="at index 1: y = 2, u = 1"):
        band(y, z, u=bad)
    traced = jax.jit(lambda y, z, u: band(y, z, u=u))
    assert np.all(np.isnan(np.asarray(traced(y, z, bad))))  # cannot raise: NaN
    gradient = jax.jit(jax.grad(lambda z, u: band(y, z, u=u).sum()))(z, bad)
    assert np.all(np.isnan(np.asarray(gradient)))
    np.testing.assert_allclose(traced(y, z, y), 2 * y**2)
    scaled = lj.loss("param k = 2\n" + DEFS + "scaled(y, z, k)")
    assert np.isnan(float(jax.jit(lambda k: scaled(y, z, k=k))(-1.0)))
    with pytest.raises(lossdsl.LossDomainError, match="false: s = -1"):
        scaled(y, z, k=-1.0)


def test_device_arrays_are_checked():
    cuda = pytest.importorskip("numba.cuda")
    loss = lossdsl.compile(DEFS + "band(y, z, u)", target="cuda")
    y = np.arange(300.0)
    u = y.copy()
    assert loss(y=cuda.to_device(y), z=cuda.to_device(y), u=cuda.to_device(u)) == 0.0
    u[250] = 0.0
    with pytest.raises(lossdsl.LossDomainError, match="at index 250: y = 250, u = 0"):
        loss(y=cuda.to_device(y), z=cuda.to_device(y), u=cuda.to_device(u))
