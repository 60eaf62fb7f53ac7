"""Declared row shapes (``def cce_logits(y[N, K], z)``), batch terms of 0-d inputs, and the
shapes of a def requirement's condition.

Class indices (N,) given to a loss on one-hot rows used to broadcast row-wise (row i scaled by
its index) into a silently wrong number; every library loss whose target (or row
prediction) must be rows now refuses a vector or a number there, and still equals PyTorch on
rows. ``sum``/``mean`` of a 0-d input is a batch term, added once, as for the same input
of shape (1,). A requirement's ``rowsum`` of a vector is the shape error a loss gives.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lossdsl
from lossdsl.errors import LossDomainError, LossShapeError, LossSyntaxError

N, K = 6, 4
RNG = np.random.default_rng(20260214)
Z = RNG.normal(0.0, 2.0, (N, K))
LABELS = RNG.integers(0, K, N)
ONEHOT = np.eye(K)[LABELS]
SOFT = RNG.dirichlet(np.ones(K), N)
PROBABILITIES = RNG.dirichlet(np.ones(K), N)
GROUPS = np.array([0, 0, 1, 1, 1, 2])

# every library loss declaring a parameter rows, the call, and the declared parameter bound
# to the input ``v`` (the others are (N, K) rows, ``g`` group ids, ``s`` labels -1/+1)
DECLARED = [
    ("cce", "cce(v, p)", "y"), ("cce_logits", "cce_logits(v, z)", "y"),
    ("label_smoothing", "label_smoothing(v, z)", "y"),
    ("categorical_focal", "categorical_focal(v, p)", "y"),
    ("categorical_focal_logits", "categorical_focal_logits(v, z)", "y"),
    ("poly1", "poly1(v, p)", "y"), ("poly1_logits", "poly1_logits(v, z)", "y"),
    ("categorical_hinge", "categorical_hinge(v, z)", "y"),
    ("categorical_hinge", "categorical_hinge(y, v)", "z"),
    ("kl_div", "kl_div(v, p)", "y"), ("kl_div", "kl_div(y, v)", "p"),
    ("kl_div_log", "kl_div_log(v, z)", "y"), ("kl_div_log", "kl_div_log(y, v)", "log_p"),
    ("js_div", "js_div(v, p)", "y"), ("js_div", "js_div(y, v)", "p"),
    ("multilabel_bce", "multilabel_bce(v, p)", "y"),
    ("multilabel_bce", "multilabel_bce(y, v)", "p"),
    ("multilabel_bce_logits", "multilabel_bce_logits(v, z)", "y"),
    ("multilabel_bce_logits", "multilabel_bce_logits(y, v)", "z"),
    ("dice_rows", "dice_rows(v, p)", "y"), ("dice_rows", "dice_rows(y, v)", "p"),
    ("tversky_rows", "tversky_rows(v, p)", "y"),
    ("generalized_dice_rows", "generalized_dice_rows(v, p)", "y"),
    ("dice_images", "dice_images(v, p, g)", "y"),
    ("dice_images_logits", "dice_images_logits(v, z, g)", "y"),
    ("tversky_images", "tversky_images(v, p, g)", "y"),
    ("tversky_images_logits", "tversky_images_logits(v, z, g)", "y"),
    ("generalized_dice_images", "generalized_dice_images(v, p, g)", "y"),
    ("generalized_dice_images_logits", "generalized_dice_images_logits(v, z, g)", "y"),
    ("cosine_similarity", "cosine_similarity(v, p)", "y"),
    ("cosine_distance", "cosine_distance(y, v)", "p"),
    ("cosine_embedding", "cosine_embedding(s, v, p)", "x1"),
    ("triplet_margin", "triplet_margin(v, p, y)", "a"),
    ("triplet_margin_pnorm", "triplet_margin_pnorm(y, v, p)", "p"),
    ("triplet_margin_optax", "triplet_margin_optax(y, p, v)", "n"),
]


def _arguments(text: str, v) -> dict:
    names = set(re.findall(r"\b[a-z]\b", text))
    given = {"v": v, "p": PROBABILITIES, "z": Z, "y": SOFT, "g": GROUPS,
             "s": np.where(LABELS % 2 == 0, 1.0, -1.0)}
    return {name: value for name, value in given.items() if name in names}


@pytest.mark.parametrize(("function", "text", "parameter"), DECLARED)
def test_a_vector_where_rows_are_declared_is_a_shape_error_at_the_argument(function, text,
                                                                            parameter):
    with pytest.raises(LossShapeError) as caught:
        lossdsl.compile(text)(**_arguments(text, LABELS.astype(np.float64)))
    message = str(caught.value)
    assert f"{function} takes rows (N, K) for '{parameter}'" in message
    assert "the input 'v' is a vector (N,)" in message
    # the caret is under the argument, at its column in the text
    column = re.search(r"\bv\b", text).start() + 1
    assert (caught.value.span.line, caught.value.span.column) == (1, column)


@pytest.mark.parametrize(("text", "hint"), [
    ("cce_logits(v, z)", "for class indices (N,) use sparse_cce_logits"),
    ("cce(v, p)", "for class indices (N,) use sparse_cce"),
    ("poly1_logits(v, z)", "class indices (N,) become one-hot rows with onehot(v)"),
])
def test_the_error_says_what_to_do_with_class_indices(text, hint):
    with pytest.raises(LossShapeError) as caught:
        lossdsl.compile(text)(**_arguments(text, LABELS))
    assert hint in str(caught.value)


def test_class_indices_in_a_column_get_the_declarations_advice_not_a_column_hint():
    """A column (N, 1) of class indices (Keras' sparse labels) was told to pass v[:, 0],
    which the declaration then refused with other advice."""
    with pytest.raises(LossShapeError) as caught:
        lossdsl.compile("cce_logits(y, z)")(y=LABELS[:, None].astype(float), z=Z)
    message = str(caught.value)
    assert "the input 'y' is a column" in message and "[:, 0]" not in message
    assert "for class indices (N,) use sparse_cce_logits" in message
    with pytest.raises(LossShapeError, match=r"pass p\[:, 0\]"):  # undeclared: the hint
        lossdsl.compile("huber(y, p)")(y=Z, p=LABELS[:, None].astype(float))


def test_a_number_or_a_per_sample_value_where_rows_are_declared_is_refused():
    with pytest.raises(LossShapeError, match="'y' is a number, the same for every sample"):
        lossdsl.compile("cce_logits(y, z)")(y=1.0, z=Z)
    with pytest.raises(LossShapeError, match="it is a single number"):
        lossdsl.compile("cce_logits(0.25, z)")(z=Z)
    with pytest.raises(LossShapeError, match="it has one value per sample"):
        lossdsl.compile("cce_logits(2*y, z)")(y=LABELS, z=Z)
    # an argument computed into rows is rows: onehot of the labels is the sparse loss
    value = lossdsl.compile("cce_logits(onehot(y), z)")(y=LABELS, z=Z)
    expected = F.cross_entropy(torch.tensor(Z), torch.tensor(LABELS)).item()
    np.testing.assert_allclose(value, expected, rtol=1e-12)


@pytest.mark.parametrize("target", [ONEHOT, SOFT], ids=["onehot", "soft"])
def test_declared_losses_still_equal_torch_on_rows(target):
    y, z = torch.tensor(target), torch.tensor(Z)
    log_q = F.log_softmax(z, dim=1)
    cases = {
        "cce_logits(y, z)": F.cross_entropy(z, y).item(),
        "label_smoothing(y, z, 0.2)": F.cross_entropy(z, y, label_smoothing=0.2).item(),
        # Leng et al.'s Poly-1: cross-entropy + epsilon (1 - p_t), p_t = sum_k y_k q_k
        "poly1_logits(y, z, 2.0)": (F.cross_entropy(z, y, reduction="none")
                                    + 2.0*(1 - (y*log_q.exp()).sum(1))).mean().item(),
        "kl_div_log(y, z)": F.kl_div(log_q, y, reduction="batchmean").item(),
        "multilabel_bce_logits(y, z)": F.binary_cross_entropy_with_logits(z, y).item(),
        "cosine_similarity(y, z)": -F.cosine_similarity(y, z, dim=1).mean().item(),
    }
    for text, expected in cases.items():
        value = lossdsl.compile(text)(y=target, z=Z if "kl_div" not in text else
                                      log_q.numpy())
        np.testing.assert_allclose(value, expected, rtol=1e-11, err_msg=text)


USER_TEXT = """
# cross-entropy of soft targets t against logits z
def soft_ce(t[N, K] in [0, 1], z) = -rowsum(t*log_softmax(z))
loss direct = soft_ce(y, z)
let through_a_let = 0.5*soft_ce(y, z)
loss via_let = through_a_let
"""


@pytest.fixture(scope="module")
def user_library(tmp_path_factory) -> lossdsl.Library:
    path = tmp_path_factory.mktemp("declared") / "soft.loss"
    path.write_text(USER_TEXT)
    return lossdsl.load(path)


def test_a_user_def_declares_rows_and_keeps_its_domain(user_library):
    # the argument where the loss, or the let the loss reads, calls the def
    for name, place in (("direct", (4, 23)), ("via_let", (5, 33))):
        with pytest.raises(LossShapeError) as caught:
            user_library[name].compile()(y=LABELS, z=Z)
        assert "soft_ce takes rows (N, K) for 't'" in str(caught.value)
        assert "declared 't[N, K]'" in str(caught.value)
        assert (caught.value.span.line, caught.value.span.column) == place
    # no sparse_soft_ce: the hint is onehot
    assert "onehot(y)" in str(caught.value)
    expected = F.cross_entropy(torch.tensor(Z), torch.tensor(SOFT)).item()
    direct = user_library["direct"].compile()
    np.testing.assert_allclose(direct(y=SOFT, z=Z), expected, rtol=1e-12)
    np.testing.assert_allclose(user_library["via_let"].compile()(y=SOFT, z=Z), 0.5*expected,
                               rtol=1e-12)
    with pytest.raises(LossDomainError, match="'y' must be in \\[0, 1\\]"):
        direct(y=SOFT + 1.0, z=Z)


def test_row_wise_broadcasting_without_a_declaration_is_unchanged():
    # a per-sample weight scaling each row is the language's broadcasting (section 4)
    weights = RNG.uniform(0.5, 2.0, N)
    value = lossdsl.compile("rowsum(w*z)")(w=weights, z=Z)
    np.testing.assert_allclose(value, np.mean(weights*Z.sum(1)), rtol=1e-12)


@pytest.mark.parametrize(("text", "column", "what"), [
    ("def f(y[N, M], z) = y*z", 8, "declared shape is \\[N, K\\]"),
    ("def f(y[K, N], z) = y*z", 8, "declared shape is \\[N, K\\]"),
    ("def f(y[N], z) = y*z", 10, None),
])
def test_a_declared_shape_other_than_n_k_is_a_syntax_error(text, column, what):
    with pytest.raises(LossSyntaxError, match=what) as caught:
        lossdsl.compile(text + "\nf(y, z)")
    assert caught.value.span.column == column


def test_lossdsl_jax_refuses_a_vector_where_rows_are_declared():
    pytest.importorskip("jax")
    import lossdsl.jax

    f = lossdsl.jax.loss("cce_logits(y, z)")
    with pytest.raises(LossShapeError, match="cce_logits takes rows"):
        f(y=LABELS, z=Z)
    with pytest.raises(LossShapeError, match="the input 'y' is a column"):
        f(y=LABELS[:, None].astype(float), z=Z)
    np.testing.assert_allclose(float(f(y=ONEHOT, z=Z)),
                               F.cross_entropy(torch.tensor(Z), torch.tensor(LABELS)).item(),
                               rtol=1e-6)  # lossdsl.jax computes in float32 by default


# ---------------------------------------------------------------- a batch term of a 0-d input

TARGET = np.array([1.0, 2.0, 3.0])
PREDICTION = np.array([1.5, 2.0, 2.0])
SAMPLE_WEIGHT = np.array([0.5, 2.0, 1.0])
REGULARISED = "mse(y, p) + 0.1*l2(w) + 0.3*mean(w)"


@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_sum_and_mean_of_a_number_are_batch_terms_like_a_one_element_vector(reduction,
                                                                           weighted):
    w = 2.0
    # by hand: l2(w) = w^2 (halved or not: read off the library, the term is 0.1*l2(w))
    l2 = float(lossdsl.compile("l2(w)")(w=np.array([w])))
    batch = 0.1*l2 + 0.3*w
    squared = (PREDICTION - TARGET)**2
    weights = SAMPLE_WEIGHT if weighted else np.ones(3)
    expected = {"sum": np.sum(weights*squared) + batch,
                "mean": np.sum(weights*squared)/3 + batch,
                "none": weights*squared + batch}[reduction]
    compiled = lossdsl.compile(REGULARISED, reduction=reduction)
    extra = {"sample_weight": SAMPLE_WEIGHT} if weighted else {}
    as_number = compiled(y=TARGET, p=PREDICTION, w=w, **extra)
    as_vector = compiled(y=TARGET, p=PREDICTION, w=np.array([w]), **extra)
    np.testing.assert_allclose(as_number, expected, rtol=1e-12)
    np.testing.assert_allclose(as_number, as_vector, rtol=1e-12)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_the_gradient_of_a_batch_term_of_a_number_counts_it_once(reduction):
    compiled = lossdsl.compile(REGULARISED, reduction=reduction)
    w = 2.0

    def total(at: float) -> float:
        return float(compiled(y=TARGET, p=PREDICTION, w=at))

    step = 1e-6
    central = (total(w + step) - total(w - step))/(2*step)
    gradient = compiled.grad("w", y=TARGET, p=PREDICTION, w=w)
    one_element = compiled.grad("w", y=TARGET, p=PREDICTION, w=np.array([w]))
    np.testing.assert_allclose(gradient, central, rtol=1e-7)
    np.testing.assert_allclose(np.ravel(gradient), one_element, rtol=1e-12)


# ---------------------------------------------------------------- a requirement's shapes

def test_a_requirement_reading_rowsum_of_a_vector_is_the_shape_error_of_a_loss():
    text = ("def f(y, z) requires rowsum(y) > -1 = -rowsum(y*log_softmax(z))\n"
            "loss l = f(y, z)")
    compiled = lossdsl.compile(text)
    with pytest.raises(LossShapeError, match="rowsum .* needs a per-class matrix .*'y' is a "
                                             "vector") as caught:
        compiled(y=np.array([0.0, 2.0]), z=np.ones((2, 3)))
    assert (caught.value.span.line, caught.value.span.column) == (2, 12)
    # on rows the requirement holds and the loss is the cross-entropy
    expected = F.cross_entropy(torch.tensor(Z), torch.tensor(SOFT)).item()
    np.testing.assert_allclose(compiled(y=SOFT, z=Z), expected, rtol=1e-12)
