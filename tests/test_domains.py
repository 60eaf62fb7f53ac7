"""Declared domains (``def hinge(y in {-1, 1}, z)``): numbers checked when the loss is
compiled, inputs and params at every call, on every path a call can take (the general one,
the planned small call, Dask chunks, JAX, device arrays under the CUDA simulator), so that a
0/1 label given to a -1/+1 loss is an error that says what to do, not a silently wrong
number."""

import math
import pickle

import numpy as np
import pytest

import lossdsl
from lossdsl.domains import Domain, first_outside
from lossdsl.frontend.resolve import resolve_text

DEFS = """
def margin(y in {-1, 1}, z) = max(0, 1 - y*z)
def share(y in [0, 1], z, a in (0, 1] = 0.5) = a*(y - z)^2
def count(y in [0, inf), z) = exp(z) - y*z
"""


@pytest.fixture(scope="module")
def margin():
    return lossdsl.compile(DEFS + "margin(y, z)")


def test_every_form_of_domain_parses_and_reads_back():
    scope = resolve_text(
        "def f(a in {-1, 1, 1}, b in [0, 1], c in (0, inf), d in [-inf, 2), e in (1/4, 2^3],\n"
        "      g in [\n 0, 1)) = a + b + c + d + e + g")
    domains = scope.defs["f"].domains
    assert [str(domains[name]) for name in "abcdeg"] == [
        "{-1, 1}", "[0, 1]", "(0, inf)", "[-inf, 2)", "(0.25, 8]", "[0, 1)"]
    assert 1.0 in domains["a"] and 0.0 not in domains["a"]
    assert 0.0 not in domains["c"] and math.inf not in domains["c"] and 1e300 in domains["c"]
    assert 8.0 in domains["e"] and 0.25 not in domains["e"] and 1.0 not in domains["g"]
    assert all(math.nan not in domain for domain in domains.values())


@pytest.mark.parametrize("text, message", [
    ("def f(y in [0, k]) = y\n", "bounds must be numbers; 'k' is not a constant"),
    ("param k = 2\ndef f(y in [0, k]) = y\n", "bounds must be numbers; 'k' is not"),
    ("def f(y in [1, 1]) = y\n", "low end must be below its high end, got 1 and 1"),
    ("def f(y in {0, nan}) = y\n", "cannot be nan"),
    ("def f(y in {0 1}) = y\n", "expected"),
    ("def f(y in 0) = y\n", "unexpected"),
])
def test_bad_declarations_are_positioned_errors(text, message):
    with pytest.raises(lossdsl.LossError, match=message) as error:
        lossdsl.compile(text + "f(x)")
    assert error.value.line is not None


def test_numbers_are_checked_when_the_loss_is_compiled():
    with pytest.raises(lossdsl.LossDomainError, match=r"quantile's 'alpha' must be in \[0, 1\]"
                       r" \(declared 'alpha in \[0, 1\]' at .*regression.loss:\d+\); got 1.5") \
            as error:
        lossdsl.compile("quantile(y, p, 1.5)")
    assert (error.value.line, error.value.column) == (1, 16)  # the caret under 1.5
    with pytest.raises(lossdsl.LossDomainError, match="got 2"):
        lossdsl.compile("pinball(y, p, alpha=2)")  # through pinball, which calls quantile
    with pytest.raises(lossdsl.LossDomainError,
                       match=r"'a' must be in \(0, 1\] \(declared 'a in \(0, 1\]'\); got 0"):
        lossdsl.compile(DEFS + "share(y, z, 0)")
    # a default outside its own domain is reported where the def is used
    with pytest.raises(lossdsl.LossDomainError, match="got 3"):
        lossdsl.compile("def f(y, a in [0, 1] = 3) = a*y\nf(x)")
    assert lossdsl.compile("quantile(y, p, 1)")(y=np.ones(2), p=np.zeros(2)) == 1.0


@pytest.mark.parametrize("labels, index, found", [
    ([1.0, -1.0, 0.0], 2, "0.0"),
    ([1.0, math.nan], 1, "nan"),
    ([2.0, 1.0], 0, "2.0"),
])
def test_input_values_outside_are_refused_with_their_index(margin, labels, index, found):
    z = np.zeros(len(labels))
    with pytest.raises(lossdsl.LossDomainError,
                       match=rf"input 'y' must be -1 or 1: it is margin's 'y', declared "
                             rf"'y in {{-1, 1}}'; found {found} at index {index}") as error:
        margin(y=np.array(labels), z=z)
    assert error.value.hint == "map 0/1 labels to -1/+1 with 2*y - 1"
    assert (error.value.line, error.value.column) == (5, 8)  # the y of margin(y, z)


def test_every_derivative_and_both_call_paths_check(margin):
    y, z = np.array([1.0, -1.0, 1.0]), np.array([0.5, 0.2, 2.0])
    for _ in range(3):  # the first call plans; later calls of the signature take the plan
        assert margin(y=y, z=z) == pytest.approx((0.5 + 1.2) / 3)
        for call in (lambda **k: margin.grad("z", **k), lambda **k: margin.hessian("z", **k),
                     lambda **k: margin.grad_and_hessian("z", **k), margin):
            with pytest.raises(lossdsl.LossDomainError, match="at index 1"):
                call(y=np.array([1.0, 0.0, 1.0]), z=z)


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.int8, np.bool_, np.float16])
def test_other_dtypes_are_checked(margin, dtype):
    good = np.array([1, -1, 1]).astype(dtype) if dtype is not np.bool_ else None
    if good is not None:
        margin(y=good, z=np.zeros(3))
    with pytest.raises(lossdsl.LossDomainError, match="at index 1"):
        margin(y=np.array([1, 0, 1]).astype(dtype), z=np.zeros(3))


def test_scalar_and_matrix_inputs():
    bce = lossdsl.compile("multilabel_bce_logits(y, z)", reduction="none")
    labels = np.array([[0.0, 1.0], [0.25, 1.0], [1.0, 1.5]])
    with pytest.raises(lossdsl.LossDomainError, match=r"must be in \[0, 1\].*found 1.5 at index 5"):
        bce(y=labels, z=np.zeros((3, 2)))
    np.testing.assert_allclose(bce(y=labels[:2], z=np.zeros((2, 2))), [math.log(2)] * 2)
    shared = lossdsl.compile("bce_logits(t, z)")  # one number for every sample
    assert shared(t=1.0, z=np.zeros(2)) == pytest.approx(math.log(2))
    with pytest.raises(lossdsl.LossDomainError, match="found -0.5"):
        shared(t=-0.5, z=np.zeros(2))


def test_errors_say_which_input_and_where_as_attributes_that_survive_pickling(margin):
    """A caller that knows more (the command line knows a chunk's file lines) reads the
    place from the error, not from its text."""
    with pytest.raises(lossdsl.LossDomainError) as outside:
        margin(y=np.array([1.0, 1.0, 0.0]), z=np.zeros(3))
    bce = lossdsl.compile("multilabel_bce_logits(y, z)", reduction="none")
    with pytest.raises(lossdsl.LossDomainError) as matrix:
        bce(y=np.array([[0.0, 1.0], [1.0, 1.5]]), z=np.zeros((2, 2)))
    with pytest.raises(lossdsl.LossDomainError) as label:
        lossdsl.compile("sparse_cce_logits(y, z)")(y=np.array([0, 3]), z=np.zeros((2, 3)))
    with pytest.raises(lossdsl.LossDomainError) as requirement:
        lossdsl.compile("hinge(2*y - 1, z)")(y=np.array([1.0, -1.0]), z=np.zeros(2))
    with pytest.raises(lossdsl.LossDomainError) as param:
        lossdsl.compile("param level = 0.9\nquantile(y, p, level)")(
            y=np.ones(2), p=np.ones(2), level=1.2)
    expected = [(outside, "y", 2), (matrix, "y", 3), (label, "y", 1),
                (requirement, None, (1,)), (param, None, None)]
    for error, name, index in expected:
        copy = pickle.loads(pickle.dumps(error.value))
        assert (copy.input, copy.index, str(copy)) == (name, index, str(error.value))
    moved = matrix.value.relocated(" at line 3 of m.csv, class 1")
    assert "found 1.5 at line 3 of m.csv, class 1" in moved.message
    assert "at index" not in moved.message and moved.index == 3


def test_params_are_checked_at_every_call():
    loss = lossdsl.compile("param level = 0.9\nquantile(y, p, level)")
    y, p = np.array([1.0, 2.0]), np.array([1.5, 1.5])
    assert loss(y=y, p=p) == pytest.approx((0.1 * 0.5 + 0.9 * 0.5) / 2)
    for _ in range(2):
        with pytest.raises(lossdsl.LossDomainError,
                           match=r"param 'level' must be in \[0, 1\].*found 1.2"):
            loss(y=y, p=p, level=1.2)
    with pytest.raises(lossdsl.LossDomainError, match="found -1"):
        lossdsl.compile(loss.loss, params={"level": -1.0})(y=y, p=p)


def test_lets_and_intersections_carry_their_domains():
    text = DEFS + "let m = margin(y, z)\nloss l = m + share(y, z)\nloss plain = (y - z)^2\n"
    scope = resolve_text(text)
    assert sorted(str(d.domain) for d in scope.losses["l"].domains) == ["[0, 1]", "{-1, 1}"]
    assert scope.losses["plain"].domains == ()
    both = lossdsl.compile(DEFS + "let m = margin(y, z)\nm + share(y, z)")
    z = np.zeros(2)
    assert both(y=np.ones(2), z=z) == pytest.approx(1.5)  # 1 is in both domains
    with pytest.raises(lossdsl.LossDomainError, match="margin's 'y'"):
        both(y=np.array([1.0, 0.0]), z=z)
    with pytest.raises(lossdsl.LossDomainError, match="share's 'y'"):
        both(y=np.array([1.0, -1.0]), z=z)


def test_computed_arguments_are_checked_as_requirements():
    mapped = lossdsl.compile("hinge(2*y - 1, z)")  # the mapping the hint asks for
    assert mapped(y=np.array([0.0, 1.0]), z=np.array([-1.0, 1.0])) == 0.0
    (requirement,) = mapped.requirements()
    assert requirement.text == "y in {-1, 1}" and str(requirement.condition).count("!=") == 2
    with pytest.raises(lossdsl.LossDomainError,
                       match=r"hinge requires y in \{-1, 1\} \(declared at .*classification"
                             r"\.loss:\d+\), which is false at index 1: y = -3\n"):
        mapped(y=np.array([1.0, -1.0]), z=np.zeros(2))  # already -1/+1: mapped twice
    scaled = lossdsl.compile("param s = 1\nquantile(y, p, 0.5*s)")  # a param's expression
    assert scaled(y=np.ones(2), p=np.ones(2)) == 0.0
    with pytest.raises(lossdsl.LossDomainError, match="false: alpha = 1.5"):
        scaled(y=np.ones(2), p=np.ones(2), s=3.0)
    # what the shapes pass must type (a column of a score matrix) stays unchecked
    assert lossdsl.compile("negative_binomial_scores(y, z)").requirements() == ()
    # a value of the whole batch was left unchecked too: quantile at alpha 1.5 returned
    # 0.75 and 2.25 (the pinball loss outside its domain) without a word
    for text, at in (("quantile(y, p, mean(a))", "mean(a)"), ("hinge(sum(s), z)", "sum(s)"),
                     ("hinge(groupsum(s, g), z)", "groupsum(s, g)")):
        with pytest.raises(lossdsl.LossDomainError,
                           match=r"computed over the samples .* pass it as an input") as error:
            lossdsl.compile(text)
        assert error.value.span.text() == at


#: Each library loss's label domain, as its reference states or enforces it.
LABEL_DOMAINS = {
    "{-1, 1}": ("hinge", "squared_hinge", "soft_margin", "modified_huber", "perceptron",
                "hinge_embedding", "margin_ranking"),
    "[0, 1]": ("bce", "bce_logits", "probit_bce", "focal", "focal_logits", "cost_sensitive_bce",
               "cross_entropy_lambda", "multilabel_bce", "multilabel_bce_logits",
               # CatBoost's ERR and PFound read a label as a probability
               "lambdarank_err", "stochastic_rank_pfound", "stochastic_rank_err"),
    "{0, 1}": ("exponential", "binary_sparsemax", "lambdarank_map"),
    "[0, inf)": ("poisson", "poisson_log", "tweedie", "negative_binomial",
                 "aft_normal", "aft_logistic", "aft_extreme"),
    # LightGBM's default label_gain, XGBoost's exponential gain
    "[0, 31]": ("lambdarank", "lambdarank_mean"),
    "(0, inf)": ("gamma",),
}


@pytest.mark.parametrize("domain", sorted(LABEL_DOMAINS))
def test_library_labels_are_declared_as_their_references_take_them(domain):
    for name in LABEL_DOMAINS[domain]:
        assert f"y in {domain}" in lossdsl.catalog.entry(name).signature, name


def test_library_declarations_refuse_what_their_references_refuse():
    # one loss of each kind through its kernels: the mechanism is the same for all
    y01 = np.array([0.0, 1.0, 1.0, 0.0])
    z = np.array([0.3, -0.2, 1.0, 0.1])
    with pytest.raises(lossdsl.LossDomainError, match="must be -1 or 1"):
        lossdsl.compile("hinge(y, z)")(y=y01, z=z)
    bce = lossdsl.compile("bce_logits(y, z)")
    bce(y=y01, z=z)
    with pytest.raises(lossdsl.LossDomainError, match=r"must be in \[0, 1\]"):
        bce(y=2 * y01 - 1, z=z)  # -1/+1 labels given to a 0/1 loss
    with pytest.raises(lossdsl.LossDomainError, match="found -1.0"):
        lossdsl.compile("poisson_log(y, z)")(y=np.array([1.0, -1.0]), z=np.zeros(2))
    for text, message in (("poisson(y, p, full=2)", "'full' must be 0 or 1"),
                          ("lambdarank(y, z, q, truncation=0)", r"'truncation' must be in \[1"),
                          ("lambdarank_map(y, z, q, norm=0.5)", "'norm' must be 0 or 1"),
                          ("triplet_margin(a, p, n, swap=2)", "'swap' must be 0 or 1"),
                          ("huber(y, p, 0)", r"'delta' must be in \(0, inf\)")):
        with pytest.raises(lossdsl.LossDomainError, match=message):
            lossdsl.compile(text)
    q = np.array([0, 0, 0, 1, 1])
    with pytest.raises(lossdsl.LossDomainError, match="'y' must be 0 or 1.*found 2.0 at index 1"):
        lossdsl.compile("lambdarank_map(y, z, q)")(
            y=np.array([0.0, 2.0, 1.0, 1.0, 0.0]), z=np.arange(5.0), q=q)


def test_probabilities_outside_0_1_are_refused():
    """Logits passed as probabilities gave NaN (bce) or a wrong number silently; PyTorch's
    BCELoss raises. Losses whose reference clips and renormalises (cce, Keras) still do."""
    y = np.array([0.0, 1.0, 1.0, 0.0])
    for name in ("bce", "multilabel_bce", "focal", "gce"):
        assert "p in [0, 1]" in lossdsl.catalog.entry(name).signature, name
    bce = lossdsl.compile("bce(y, p)")
    for _ in range(2):  # the general path and the planned call
        with pytest.raises(lossdsl.LossDomainError,
                           match=r"input 'p' must be in \[0, 1\]: it is bce's 'p'.*found 2.0 "
                                 "at index 0"):
            bce(y=y, p=np.array([2.0, -1.0, 0.5, -3.0]))
        with pytest.raises(lossdsl.LossDomainError, match="found 1.5 at index 2"):
            bce.grad("p", y=y, p=np.array([0.0, 1.0, 1.5, 0.5]))
        assert np.isfinite(bce(y=y, p=np.array([0.0, 1.0, 0.5, 0.2])))
    for text, inputs in (("focal(y, p)", {"y": y, "p": np.array([0.1, 1.5, 0.5, 0.2])}),
                         ("multilabel_bce(y, p)", {"y": y.reshape(2, 2),
                                                   "p": np.array([[0.1, 0.2], [-0.5, 0.3]])}),
                         ("gce(y, p)", {"y": np.array([0, 1]),
                                        "p": np.array([[0.5, 0.5], [1.2, -0.2]])})):
        with pytest.raises(lossdsl.LossDomainError, match="'p' must be in"):
            lossdsl.compile(text)(**inputs)
    # a computed probability is checked row by row (a requirement)
    z = np.array([-3.0, 40.0, -40.0, 0.0])
    assert np.isfinite(lossdsl.compile("bce(y, sigmoid(z))")(y=y, z=z))
    with pytest.raises(lossdsl.LossDomainError, match=r"bce requires p in \[0, 1\].*index 1"):
        lossdsl.compile("bce(y, 2*sigmoid(z))")(y=y, z=z)
    lossdsl.compile("cce(y, p)")(y=np.eye(2), p=np.array([[2.0, 1.0], [0.5, 3.0]]))  # Keras


def test_focal_alpha_above_1_is_refused():
    """focal_logits(y, z, 2) meant gamma = 2 but set alpha (1 - alpha < 0: a negative loss);
    torchvision takes alpha in [0, 1], or alpha < 0 for no balancing, which still works."""
    y, z = np.array([0.0, 1.0]), np.array([0.5, 1.0])
    for text in ("focal_logits(y, z, 2)", "focal(y, p, 1.5)"):
        with pytest.raises(lossdsl.LossDomainError,
                           match=r"'alpha' must be in \(-inf, 1\].*got (1.5|2)"):
            lossdsl.compile(text)
    assert lossdsl.compile("focal_logits(y, z, 1)")(y=y, z=z) > 0
    off = lossdsl.compile("focal_logits(y, z, -1)")(y=y, z=z)
    assert off == pytest.approx(2 * lossdsl.compile("focal_logits(y, z, 0.5)")(y=y, z=z))
    loss = lossdsl.compile("param a = 0.25\nfocal_logits(y, z, a)")
    assert loss(y=y, z=z) > 0
    with pytest.raises(lossdsl.LossDomainError, match="focal_logits's 'alpha'.*found 2"):
        loss(y=y, z=z, a=2.0)


def test_the_catalog_shows_the_declarations():
    assert lossdsl.catalog.entry("hinge").signature == "hinge(y in {-1, 1}, z)"
    assert lossdsl.catalog.entry("quantile").signature == "quantile(y, p, alpha in [0, 1] = 0.5)"
    assert lossdsl.catalog.entry("quantile").formula.startswith("where(y >= p")


def test_first_outside_on_host_arrays():
    interval = Domain((), 0.0, 1.0, False, True)
    assert first_outside(np.array([0.0, 0.5, 0.99]), interval) is None
    assert first_outside(np.array([[0.0, 0.5], [1.0, 0.2]]), interval) == (2, 1.0)
    assert first_outside(np.arange(5)[::2], Domain((0.0, 2.0, 4.0))) is None
    assert first_outside(np.array([1, 3], dtype=np.uint8), Domain((1.0, 2.0))) == (1, 3)
    assert first_outside(np.zeros(0), interval) is None
    tiny = np.nextafter(0.0, 1.0)
    open_ends = Domain((), 0.0, 1.0, True, True)
    assert first_outside(np.array([tiny, 1 - 2**-53]), open_ends) is None
    assert first_outside(np.array([tiny, 0.0]), open_ends) == (1, 0.0)
    assert first_outside(np.array([0.5, 1.0], dtype=np.float32), open_ends) == (1, 1.0)
    six = Domain(tuple(float(k) for k in range(6)))
    assert first_outside(np.arange(6.0), six) is None
    assert first_outside(np.array([5.0, 2.5]), six) == (1, 2.5)
    values = np.ones(10_000)
    values[[7_000, 9_000]] = np.nan  # past the first block of the compiled check
    assert first_outside(values, Domain((-1.0, 1.0)))[0] == 7_000
    assert first_outside(values, interval)[0] == 0
    assert first_outside(values, Domain((), 0.5, 1.0))[0] == 7_000


def test_domains_pickle_by_their_fields():
    domain = Domain((), 0.0, 1.0, True, False)
    copy = pickle.loads(pickle.dumps(domain))
    assert copy == domain and copy.search[1] == domain.search[1]
    loss = pickle.loads(pickle.dumps(lossdsl.compile("hinge(y, z)")))
    with pytest.raises(lossdsl.LossDomainError, match="at index 0"):
        loss(y=np.zeros(2), z=np.zeros(2))


def test_parallel_kernels_count_the_values_outside():
    loss = lossdsl.compile("hinge(y, z)", target="parallel")
    y, z = np.ones(100_000), np.zeros(100_000)
    assert loss(y=y, z=z) == 1.0
    y[60_000] = 0.0
    for _ in range(2):
        with pytest.raises(lossdsl.LossDomainError, match="at index 60000"):
            loss.grad("z", y=y, z=z)


def test_dask_checks_every_chunk():
    da = pytest.importorskip("dask.array")
    import lossdsl.dask as ld

    loss = ld.compile("hinge(y, z)")
    y = np.ones(40)
    y[33] = 0.0
    z = np.zeros(40)
    good = loss(y=da.from_array(np.ones(40), chunks=10), z=da.from_array(z, chunks=10))
    assert float(good) == 1.0
    with pytest.raises(lossdsl.LossDomainError, match="found 0.0 at index 33"):
        float(loss(y=da.from_array(y, chunks=10), z=da.from_array(z, chunks=10)))


def test_jax_checks_concrete_values():
    pytest.importorskip("jax")
    import lossdsl.jax as lj

    hinge = lj.loss("hinge(y, z)")
    z = np.zeros(3)
    assert float(hinge(np.array([1.0, -1.0, 1.0]), z)) == 1.0
    with pytest.raises(lossdsl.LossDomainError, match="found 0.0 at index 2"):
        hinge(np.array([1.0, -1.0, 0.0]), z)


def test_jax_makes_traced_values_outside_nan():
    jax = pytest.importorskip("jax")
    import lossdsl.jax as lj

    hinge = lj.loss("hinge(y, z)", reduction="none")
    z = np.array([0.5, 0.5, 0.5])
    good = np.array([1.0, -1.0, 1.0])
    np.testing.assert_allclose(jax.jit(hinge)(good, z), [0.5, 1.5, 0.5])
    values = np.asarray(jax.jit(hinge)(np.array([1.0, 0.0, 1.0]), z))  # traced: cannot raise
    assert np.isnan(values[1]) and np.all(np.isfinite(values[[0, 2]]))
    gradient = np.asarray(jax.jit(jax.grad(lambda y, z: hinge(y, z).sum(), argnums=1))(
        np.array([1, 0, -1]), z))  # integer labels too
    assert np.all(np.isnan(gradient))  # every derivative of such a call
    good_gradient = jax.jit(jax.grad(lambda y, z: hinge(y, z).sum(), argnums=1))(good, z)
    np.testing.assert_allclose(good_gradient, [-1.0, 1.0, -1.0])


def test_device_arrays_are_checked_on_the_device():
    cuda = pytest.importorskip("numba.cuda")
    loss = lossdsl.compile("hinge(y, z)", target="cuda")
    z = cuda.to_device(np.zeros(300))
    y = np.ones(300)
    assert loss(y=cuda.to_device(y), z=z) == pytest.approx(1.0)
    y[[150, 250]] = 0.0
    with pytest.raises(lossdsl.LossDomainError, match="found 0.0 at index 150"):
        loss(y=cuda.to_device(y), z=z)


def test_label_scale_predictions_stay_inside_the_labels_domain():
    from lossdsl.implied import label_bounds
    from lossdsl.linear import LossRegressor

    assert label_bounds([Domain((), 0.0, math.inf, True, True)]) == (5e-324, 1.7976931348623157e308)
    assert label_bounds([Domain((-1.0, 1.0)), Domain((), 0.0, 2.0)]) == (0.0, 1.0)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    y = rng.gamma(2.0, np.exp(X @ np.array([0.8, -0.5])) / 2.0)
    model = LossRegressor("gamma", alpha=0.01).fit(X, y)
    # far-out rows predict means below the smallest label: the bracket search for the
    # label-scale prediction halves its way toward 0 instead of stepping to labels below it
    predictions = model.predict(4 * X)
    assert predictions.min() < y.min() / 100
    np.testing.assert_allclose(predictions, np.exp(model.predict_raw(4 * X)), rtol=1e-9)


def test_an_input_outside_its_domain_is_shown_where_the_failing_loss_uses_it(tmp_path):
    """The caret was under the input's first use anywhere in the file: a let or another loss
    that the failing loss does not read."""
    path = tmp_path / "two.loss"
    path.write_text("def h(y in {-1, 1}, z) = y*z\nlet t = p - y\nloss q = y + p\n"
                    "loss l7 = h(y, p)\n")
    with pytest.raises(lossdsl.LossDomainError) as error:
        lossdsl.load(str(path)).l7.compile()(y=np.array([0.0]), p=np.array([1.0]))
    assert (error.value.span.line, error.value.span.column) == (4, 13)
    assert lossdsl.load(str(path)).q.inputs == ("p", "y")  # the file's order, as before


def test_an_input_with_a_domain_that_the_simplifier_removed_is_not_asked_for():
    """Its declared domain was still checked, and reading it raised a raw KeyError."""
    for text in ("where(1 > 0, mse(a, b), hinge(y, z))", "0*bce(y, p) + mse(a, b)",
                 "hinge(y, z) - hinge(y, z) + mse(a, b)"):
        loss = lossdsl.compile(text, reduction="none")
        assert loss.inputs == ("a", "b")
        assert loss(a=np.array([1.0]), b=np.array([2.0])).tolist() == [1.0]
