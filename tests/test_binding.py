"""Call-time binding: every label read range-checked against the axis it indexes, shapes and
dtypes that are converted or refused (never guessed), reductions that count a per-sample
constant once per sample, and strings that name a library loss or a file."""

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import lossdsl


@pytest.fixture(scope="module")
def table_lookup():
    return lossdsl.compile("rowsum(rowof(C, y) * z)", reduction="none")


@pytest.mark.parametrize("label", [1e9, 1000, 3, -2, -1e-300, 0.5, math.nan, math.inf])
def test_scalar_label_of_a_table_is_range_checked(table_lookup, label):
    # used to segfault (1e9), return heap garbage (1000) or wrap to another row (-2)
    with pytest.raises(lossdsl.LossDomainError, match=r"'y' must hold integers in \[0, 3\)") \
            as error:
        table_lookup(C=np.eye(3), y=label, z=np.ones((4, 3)))
    assert (error.value.line, error.value.column) == (1, 17)


def test_scalar_label_in_range_reads_its_row(table_lookup):
    table = np.arange(9.0).reshape(3, 3)
    np.testing.assert_array_equal(table_lookup(C=table, y=2, z=np.ones((4, 3))), [21.0] * 4)


def test_integer_labels_that_float32_rounds_are_refused():
    # a float32 kernel read 2**24 + 1 as 2**24: the neighbouring row, without a sign
    rows = 2**24 + 2
    table = np.zeros((rows, 1), np.float32)
    table[2**24 + 1] = 2.0
    narrow = np.ones((1, 1), np.float32)
    for _ in range(2):  # the first call, then the repeated call's path
        with pytest.raises(lossdsl.LossDomainError, match=r"more than float32 can number"):
            lossdsl.compile("rowsum(rowof(C, y) * z)", reduction="none")(
                C=table, y=np.array([2**24 + 1]), z=narrow)
    # labels below 2**24 stay exact, and a float64 kernel reads every one
    table_lookup = lossdsl.compile("rowsum(rowof(C, y) * z)", reduction="none")
    assert table_lookup(C=table, y=np.array([5]), z=narrow)[0] == 0.0
    assert table_lookup(C=table, y=np.array([2**24 + 1]), z=np.ones((1, 1)))[0] == 2.0


@pytest.fixture(scope="module")
def two_class_axes():
    return lossdsl.compile("logsumexp(z) - pick(z, y) + mean(pick(u, v))")


def test_labels_are_checked_against_their_own_class_axis(two_class_axes):
    z, u = np.zeros((4, 3)), np.arange(10.0).reshape(2, 5)
    y = np.array([0, 1, 2, 0])
    # v indexes u's 5 columns: 4 is valid although z has 3 classes
    value = two_class_axes(z=z, y=y, u=u, v=np.array([4, 3]))
    assert value == pytest.approx(math.log(3) + (4 + 8) / 2)
    with pytest.raises(lossdsl.LossDomainError, match=r"'v' must hold integers in \[0, 5\)"):
        two_class_axes(z=z, y=y, u=u, v=np.array([0, 99999]))
    with pytest.raises(lossdsl.LossDomainError, match=r"'y' must hold integers in \[0, 3\)"):
        two_class_axes(z=z, y=np.array([0, 1, 4, 0]), u=u, v=np.array([4, 3]))


def test_reversed_class_axes_accept_valid_labels():
    loss = lossdsl.compile("mean(pick(u, v)) + logsumexp(z) - pick(z, y)")
    z, u = np.zeros((4, 3)), np.arange(10.0).reshape(2, 5)
    value = loss(z=z, y=np.array([0, 1, 2, 0]), u=u, v=np.array([4, 3]))
    assert value == pytest.approx(math.log(3) + (4 + 8) / 2)


def test_constant_and_param_labels_are_checked():
    z = np.zeros((2, 3))
    with pytest.raises(lossdsl.LossDomainError,
                       match=r"class index 7 written in the loss must be an integer in \[0, 3\)"
                       ) as error:
        lossdsl.compile("logsumexp(z) - pick(z, 7)")(z=z)
    assert (error.value.line, error.value.column) == (1, 24)  # at the 7
    for text, found in [("pick(z, -1)", "-1"), ("rowsum(onehot(1.5) * z)", "1.5")]:
        with pytest.raises(lossdsl.LossDomainError,  # refused before any call
                           match=f"class index must be a non-negative integer; found {found}\n"):
            lossdsl.compile(text)
    loss = lossdsl.compile("param k = 1\nloss picked = logsumexp(z) - pick(z, k)")
    assert loss(z=z) == pytest.approx(math.log(3))
    with pytest.raises(lossdsl.LossDomainError, match=r"'k' must hold integers in \[0, 3\)"):
        loss(z=z, k=3)


def test_a_row_reduction_of_a_reduced_row_says_so():
    with pytest.raises(lossdsl.LossShapeError,
                       match="one value per sample: the classes of 'z' are already reduced"):
        lossdsl.compile("rowsum(rowsum(z))")(z=np.ones((2, 3)))
    with pytest.raises(lossdsl.LossShapeError, match="'u' is a vector"):
        lossdsl.compile("logsumexp(u) + rowsum(z)")(z=np.ones((2, 3)), u=np.ones(2))


def test_computed_labels_are_refused():
    with pytest.raises(lossdsl.LossShapeError, match="labels .* must be an input") as error:
        lossdsl.compile("rowsum(rowof(C, y - 1) * z)")(C=np.eye(3), y=np.ones(2),
                                                         z=np.ones((2, 3)))
    assert error.value.line == 1


def test_one_hot_matrix_for_integer_labels_is_a_shape_error():
    loss = lossdsl.compile("sparse_cce_logits(y, z)")
    z = np.array([[1.0, 2, 3], [0, 1, 0]])
    with pytest.raises(lossdsl.LossShapeError, match=r"'y' holds integer labels.*argmax"):
        loss(y=np.array([[0, 0, 1.0], [1, 0, 0]]), z=z)
    assert loss(y=np.array([2, 0]), z=z) == pytest.approx(
        np.mean([math.log(np.exp(z[0]).sum()) - 3, math.log(np.exp(z[1]).sum())]))


@pytest.mark.parametrize("reduction", ["sum", "none", "mean"])
def test_constant_term_of_a_builtin_counts_once_per_sample(reduction):
    y, p = np.array([0.3, -1, 2, 0.5]), np.array([1, 0.5, -1, 0.5])
    weight = np.array([1.0, 2.0, 0.0, 1.5])
    per_sample = np.log(np.cosh(p - y))
    loss = lossdsl.compile("log_cosh(y, p)", reduction=reduction)
    expected = {"sum": per_sample.sum(), "none": per_sample, "mean": per_sample.mean()}
    weighted = {"sum": (weight * per_sample).sum(), "none": weight * per_sample,
                "mean": (weight * per_sample).mean()}
    np.testing.assert_allclose(loss(y=y, p=p), expected[reduction], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(loss(y=y, p=p, sample_weight=weight), weighted[reduction],
                               rtol=1e-12, atol=1e-15)


def test_batch_terms_are_still_added_once():
    y, p, w = np.array([0.0, 1, 2]), np.array([1.0, 1, 0]), np.array([1.0, -2])
    loss = lossdsl.compile("(p - y)^2 + 0.1*l1(w) + 2", reduction="sum")
    assert loss(y=y, p=p, w=w) == pytest.approx(1 + 0 + 4 + 0.3 + 3 * 2)
    per_sample = lossdsl.compile("(p - y)^2 + 0.1*l1(w)", reduction="none")
    np.testing.assert_allclose(per_sample(y=y, p=p, w=w), [1.3, 0.3, 4.3])


def test_weighted_mean_divides_by_the_weights():
    y, p, weight = np.array([0.0, 1, 2]), np.array([1.0, 1, 0]), np.array([1.0, 3, 4])
    loss = lossdsl.compile("(p - y)^2", reduction="weighted_mean")
    assert loss(y=y, p=p, sample_weight=weight) == pytest.approx((1 + 0 + 16) / 8)
    assert lossdsl.compile("(p - y)^2")(y=y, p=p, sample_weight=weight) == pytest.approx(
        (1 + 0 + 16) / 3)
    np.testing.assert_allclose(loss.grad("p", y=y, p=p, sample_weight=weight),
                               2 * weight * (p - y) / 8)


def test_bare_library_name_means_the_library_loss():
    huber = lossdsl.compile("huber")
    assert huber.inputs == ("y", "p")
    assert huber(y=np.array([0.0]), p=np.array([3.0])) == pytest.approx(2.5)


def test_a_file_name_points_to_load(tmp_path):
    path = tmp_path / "stock.loss"
    path.write_text("loss stock = (p - y)^2\n")
    with pytest.raises(lossdsl.LossError, match=r"lossdsl\.load") as error:
        lossdsl.compile(str(path))
    assert error.value.line == 1
    with pytest.raises(lossdsl.LossError, match="no such file"):
        lossdsl.compile("missing.loss")


def test_a_new_users_mistakes_are_loss_errors_that_say_what_to_do(tmp_path):
    """Inputs by position (an sklearn-metric habit: a raw TypeError), a misspelt loss of a
    library (a raw AttributeError), and a function's argument given as a param (no hint)."""
    loss = lossdsl.compile("bce_logits(y, z)")
    y, z = np.array([0.0, 1.0]), np.zeros(2)
    for call in (lambda: loss(y, z), lambda: loss.grad("z", y, z),
                 lambda: loss.value_and_grad("z", y, z), lambda: loss.hessian("z", y, z),
                 lambda: loss.grad_and_hessian("z", y, z)):
        with pytest.raises(lossdsl.LossError, match=r"y=\.\.\., z=\.\.\.\) takes the loss's "
                                                    "inputs by name"):
            call()
    # the one positional argument is the sample weight (mean: sum(w l) / N); given alone
    # it said "missing input 'y'", not that the array had been taken as the weight
    assert loss(np.array([1.0, 3.0]), y=y, z=z) == pytest.approx(2 * math.log(2))
    with pytest.raises(lossdsl.LossError, match="one positional argument, which it takes as "
                                                "the sample weight, and no inputs"):
        loss(y)
    path = tmp_path / "stock.loss"
    path.write_text("loss stock = (p - y)^2\n")
    library = lossdsl.load(str(path))
    with pytest.raises(lossdsl.LossNameError, match="no loss named 'stok'") as caught:
        assert library.stok
    assert isinstance(caught.value, AttributeError) and "did you mean 'stock'" in str(caught.value)
    assert not hasattr(library, "stok") and getattr(library, "stok", 5) == 5
    with pytest.raises(lossdsl.LossNameError, match="huber's delta") as caught:
        lossdsl.compile("huber(y, p)", params={"delta": 0.1})
    assert "f(..., delta=VALUE)" in str(caught.value)
    with pytest.raises(lossdsl.LossNameError, match="(?s)'delta' is not an input.*huber's"):
        lossdsl.compile("huber(y, p)")(y=y, p=y, delta=2.0)  # per call: the same advice
    with pytest.raises(lossdsl.LossNameError, match="did you mean 'sample_weight'"):
        loss(y=y, z=z, sample_wieght=np.ones(2))


@pytest.fixture(scope="module")
def logistic():
    return lossdsl.compile("bce_logits(y, z)", reduction="none")


@pytest.mark.parametrize("dtype", [np.float16, ">f8", ">f4", np.longdouble])
def test_other_float_dtypes_are_converted(logistic, dtype):
    y, z = np.array([1.0, 0.0, 1.0]), np.array([0.3, 0.2, -4.0])
    reference = logistic.grad("z", y=y, z=z)
    gradient = logistic.grad("z", y=y.astype(dtype), z=z.astype(dtype))
    given = np.dtype(dtype)
    expected_dtype = np.float16 if given == np.float16 else (
        np.float32 if given.itemsize == 4 else np.float64)
    assert gradient.dtype == expected_dtype
    np.testing.assert_allclose(gradient, reference, rtol=1e-3 if given.itemsize <= 4 else 1e-15)


def test_half_precision_is_computed_in_float32(logistic):
    y, z = np.array([1, 0], np.float16), np.array([0.3, 0.2], np.float16)
    values = logistic(y=y, z=z)
    assert values.dtype == np.float16
    exact = logistic(y=y.astype(np.float32), z=z.astype(np.float32))
    np.testing.assert_array_equal(values, exact.astype(np.float16))


@pytest.mark.parametrize("bad", ["abc", None, [[1.0, 2.0], [3.0]], {"a": 1}, [1 + 2j]])
def test_non_numeric_inputs_are_shape_errors(logistic, bad):
    with pytest.raises(lossdsl.LossShapeError, match="input 'y'") as error:
        logistic(y=bad, z=np.zeros(1))
    assert error.value.line == 1


def test_non_numeric_params_and_weights_are_shape_errors():
    loss = lossdsl.compile("param delta = 1\nloss h = huber(y, p, delta)")
    with pytest.raises(lossdsl.LossShapeError, match="param 'delta'"):
        loss(y=[1.0], p=[2.0], delta="x")
    with pytest.raises(lossdsl.LossShapeError, match="param 'delta'"):
        lossdsl.compile("param delta = 1\nloss h = huber(y, p, delta)", params={"delta": None})
    with pytest.raises(lossdsl.LossShapeError, match="sample_weight"):
        loss(y=[1.0], p=[2.0], sample_weight=["a"])


def test_inputs_named_like_method_arguments():
    loss = lossdsl.compile("(self - wrt)^2")
    assert loss(self=[1.0, 2.0], wrt=[0.0, 0.0]) == pytest.approx(2.5)
    np.testing.assert_allclose(loss.grad("wrt", self=[1.0, 2.0], wrt=[0.0, 0.0]), [-1, -2])
    with pytest.raises(lossdsl.LossNameError, match="cannot be called 'sample_weight'") as error:
        lossdsl.compile("(sample_weight - p)^2")
    assert (error.value.line, error.value.column) == (1, 2)


def test_fork_after_a_parallel_kernel_does_not_hang():
    script = textwrap.dedent("""
        import multiprocessing, numpy as np, lossdsl
        loss = lossdsl.compile("bce_logits(y, z)", target="parallel")
        y, z = np.ones(50_000), np.linspace(-3, 3, 50_000)
        value = loss(y=y, z=z)
        def work(i):
            return loss(y=y[:100], z=z[:100])
        with multiprocessing.get_context("fork").Pool(2) as pool:
            print(len(pool.map(work, range(4))), value > 0)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["4", "True"]


def test_fork_after_other_code_ran_openmp_does_not_hang():
    """A user's parallel Numba function (LightGBM and PyTorch load the same libgomp) started
    GNU OpenMP's pool before the fork: the child hung in its first parallel kernel."""
    script = textwrap.dedent("""
        import multiprocessing, numba, numpy as np, lossdsl

        @numba.njit(parallel=True)
        def total(x):
            s = 0.0
            for i in numba.prange(x.shape[0]):
                s += x[i]
            return s

        total(np.ones(100_000))
        loss = lossdsl.compile("huber(y, p, 1.0)", target="parallel")
        def work(i):
            return loss(y=np.zeros(100_000), p=np.ones(100_000))
        with multiprocessing.get_context("fork").Pool(2) as pool:
            print(pool.map_async(work, range(2)).get(timeout=60))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[0.5,", "0.5]"]


@pytest.mark.parametrize("layer", ["default", "workqueue"])
def test_parallel_kernels_from_many_threads(layer):
    """Numba's work queue aborts the process on concurrent launches: lossdsl serialises them
    there; OpenMP (the default) runs them concurrently."""
    script = textwrap.dedent("""
        import threading, numpy as np, lossdsl
        loss = lossdsl.compile("bce_logits(y, z)", target="parallel")
        y, z = np.ones(200_000), np.linspace(-3, 3, 200_000)
        expected = loss(y=y, z=z)
        found = []
        def work():
            found.extend(loss(y=y, z=z) for _ in range(10))
        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(found == [expected] * 40)
    """)
    environment = {**os.environ, "NUMBA_THREADING_LAYER": layer}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env=environment)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True"]


def test_pandas_inputs_with_different_indexes_are_refused():
    """Rows are paired by position: pandas objects whose indexes differ (the same labels in
    another order) would pair each row with another's values, so they are refused; equal
    indexes, and NumPy arrays beside a Series, are paired by position as before."""
    pd = pytest.importorskip("pandas")
    loss = lossdsl.compile("mse(y, p)", reduction="none")
    y = pd.Series([0.0, 1.0, 2.0, 3.0], index=[0, 1, 2, 3])
    p = pd.Series([3.0, 2.0, 1.0, 0.0], index=[3, 2, 1, 0])
    with pytest.raises(lossdsl.LossShapeError, match="'y' and 'p' are pandas objects with "
                                                     "different indexes"):
        loss(y=y, p=p)
    with pytest.raises(lossdsl.LossShapeError, match="'y' and 'sample_weight'"):
        loss(y=y, p=p.to_numpy(), sample_weight=pd.Series(np.ones(4), index=[9, 8, 7, 6]))
    np.testing.assert_array_equal(loss(y=y, p=p.sort_index()), 0.0)
    np.testing.assert_array_equal(loss(y=y, p=p.to_numpy()), [9.0, 1.0, 1.0, 9.0])


def test_misused_arguments_get_loss_errors_that_say_what_to_do():
    """Found by using the API: each of these raised a raw Python error or an internal
    code-generation error."""
    loss = lossdsl.compile("huber(y, p, 1.0)")
    y, p = np.array([0.0, 1.0, 2.0]), np.array([0.5, 1.0, 4.0])
    with pytest.raises(lossdsl.LossNameError, match="wrt names 'p' twice"):
        loss.grad(("p", "p"), y=y, p=p)
    for method in (lambda: loss.grad_and_hessian(("p", "y"), y=y, p=p),
                   lambda: loss.derivative(("p", "y"))):
        with pytest.raises(lossdsl.LossNameError, match="takes one input name, got 2"):
            method()
    assert loss.grad((), y=y, p=p) == {} and loss.hessian((), y=y, p=p) == {}
    with pytest.raises(lossdsl.LossError, match="params must be a mapping"):
        lossdsl.compile("param k = 1\nloss a = k*mse(y, p)", params=[("k", 2.0)])
    with pytest.raises(lossdsl.LossNameError, match="named by strings, got 1"):
        lossdsl.compile("param k = 1\nloss a = k*mse(y, p)", params={1: 2.0})
    with pytest.raises(lossdsl.LossShapeError, match="every input given is a single number"):
        loss(y=1.0, p=3.0, sample_weight=np.array([2.0]))
    torch = pytest.importorskip("torch")
    with pytest.raises(lossdsl.LossShapeError, match=r"requires grad.*\.detach\(\)"):
        loss.grad("p", y=torch.tensor(y), p=torch.tensor(p, requires_grad=True))


def test_grouped_inputs_of_different_lengths_disagree_on_the_number_of_samples():
    """A group's items (axis n<d>g) are the second axis of a row as classes are, but they
    are samples: inputs of a grouped loss that differ in length disagree on the number of
    samples (as ranknet's always said), not of classes."""
    for text in ("softmax_ranking(y, z, q)", "mean(groupsum(z, q))"):
        loss = lossdsl.compile(text)
        inputs = {"y": np.ones(4), "z": np.zeros(4), "q": np.zeros(3, int)}
        with pytest.raises(lossdsl.LossShapeError,
                           match=r"disagree on the number of samples: .*'q' has shape \(3,\)"):
            loss(**{name: inputs[name] for name in loss.inputs})
    with pytest.raises(lossdsl.LossShapeError, match="disagree on the number of classes"):
        lossdsl.compile("sum(y * z)")(y=np.zeros((3, 3)), z=np.zeros((3, 4)))


def test_a_column_where_a_vector_meets_rows_says_to_pass_the_vector():
    """PyTorch's gaussian_nll_loss takes a variance (N, 1) against (N, K) means (it
    broadcasts the column); lossdsl refuses the column and says how to pass one value per
    sample, which gives PyTorch's number."""
    torch = pytest.importorskip("torch")
    y, p = np.random.default_rng(4).normal(size=(2, 6, 4))
    variance = np.linspace(0.5, 2.0, 6)[:, None]
    loss = lossdsl.compile("gaussian_nll(y, p, v)")
    with pytest.raises(lossdsl.LossShapeError, match=r"pass v\[:, 0\] for one value per sample"):
        loss(y=y, p=p, v=variance)
    expected = torch.nn.functional.gaussian_nll_loss(torch.tensor(p), torch.tensor(y),
                                                     torch.tensor(variance))
    assert loss(y=y, p=p, v=variance[:, 0]) == pytest.approx(expected.item(), rel=1e-12)


def test_text_importing_a_file_follows_edits_of_the_file(tmp_path, monkeypatch):
    # the integrations kept the first parse of a text by the text alone, so an edited
    # import (or another working directory) went on training the old loss
    xgboost = pytest.importorskip("lossdsl.xgboost")
    monkeypatch.chdir(tmp_path)
    text = 'import "k.loss"\nk(y, p)'
    y, p = np.array([0.0, 1.0]), np.array([1.0, 3.0])
    (tmp_path / "k.loss").write_text("def k(y, p) = 1*(y - p)^2\n")
    np.testing.assert_allclose(xgboost.objective(text)(y, p)[0], [2.0, 4.0])
    (tmp_path / "k.loss").write_text("def k(y, p) = 5*(y - p)^2\n")
    np.testing.assert_allclose(xgboost.objective(text)(y, p)[0], [10.0, 20.0])
    other = tmp_path / "other"
    other.mkdir()
    (other / "k.loss").write_text("def k(y, p) = 7*(y - p)^2\n")
    monkeypatch.chdir(other)
    np.testing.assert_allclose(xgboost.objective(text)(y, p)[0], [14.0, 28.0])
