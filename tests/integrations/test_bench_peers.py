"""The peers of ``lossdsl bench`` (lossdsl/peers.py): each computes lossdsl's numbers on the
benchmark's data, the matching of expressions to peers, the floor, and the command's output.

No timings are asserted here (speed is measured in benchmarks/). ``torch.compile`` peers are
not built here (they compile for tens of seconds); they run the same torch functions, and
``benchmarks/bench_library.py`` checks their numbers before timing them.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from sweeps import SAMPLING

import lossdsl
from lossdsl import benchmark, cli, peers

N = 2_000
CLASSES = 7
FAMILY_NAMES = sorted(peers.FAMILIES)
AVAILABLE = {name: importlib.util.find_spec(module) is not None
             for name, module in (("torch", "torch"), ("jax", "jax"), ("sklearn", "sklearn"))}


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """Building a torch peer sets torch's thread count (the benchmark's threads): restore it."""
    if not AVAILABLE["torch"]:
        yield
        return
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _reference(compiled, wrt, inputs):
    return {"value": compiled(**inputs),
            "value+grad": compiled.value_and_grad(wrt, **inputs),
            "grad+hess": compiled.grad_and_hessian(wrt, **inputs)}


def _family_sweep() -> list[str]:
    """Every family, except on CI (CI=true without LOSSDSL_FULL_SWEEPS=1), where every other
    one by name is (each family's peers compile their own kernels and torch graphs); the
    float32 test below and `lossdsl bench`'s tests check more of the peers there."""
    if SAMPLING:
        return FAMILY_NAMES[::2]
    return FAMILY_NAMES


@pytest.mark.parametrize("name", _family_sweep())
def test_every_peer_computes_lossdsls_numbers(name):
    match, why = peers.match(name)
    assert match is not None, why
    inputs = peers.family_data(match, N, CLASSES, np.float64, seed=1)
    compiled = lossdsl.compile(name)
    wrt = match.input_name(match.family.prediction)
    reference = _reference(compiled, wrt, inputs)
    found, skipped = peers.build_peers(match, inputs, "cpu")
    names = {peer.name for peer in found}
    assert "numpy" in names
    assert ("numba" in names) == (match.family.numba is not None)
    for library, present in AVAILABLE.items():
        if library == "sklearn" and match.family.sklearn is None:
            assert any(line.startswith("sklearn: has no") for line in skipped)
        elif present:
            assert library in names, skipped
        else:
            assert any(line.startswith(f"{library}:") for line in skipped)
    for peer in found:
        assert set(peer.tasks) <= set(peers.TASKS)
        assert "grad+hess" in peer.tasks or name == "focal_logits"
        assert "value+grad" in peer.tasks or peer.name == "sklearn"
        peers.check_peer(peer, reference, np.float64)
        assert peer.source().startswith("def ")


@pytest.mark.parametrize("name", ["huber", "bce_logits", "sparse_cce_logits", "tweedie"])
def test_peers_agree_in_float32(name):
    match, _ = peers.match(name)
    inputs = peers.family_data(match, N, CLASSES, np.float32)
    compiled = lossdsl.compile(name)
    wrt = match.input_name(match.family.prediction)
    reference = _reference(compiled, wrt, inputs)
    found, _ = peers.build_peers(match, inputs, "cpu", include=("numpy", "torch", "sklearn"))
    assert found
    for peer in found:
        peers.check_peer(peer, reference, np.float32)


def test_params_and_renamed_inputs_reach_the_peers():
    match, why = peers.match("huber(target, score, delta=0.5)")
    assert match is not None, why
    assert match.inputs == {"y": "target", "p": "score"} and match.params == {"delta": 0.5}
    inputs = peers.family_data(match, N, CLASSES, np.float64)
    assert set(inputs) == {"target", "score"}
    compiled = lossdsl.compile("huber(target, score, delta=0.5)")
    reference = _reference(compiled, "score", inputs)
    found, _ = peers.build_peers(match, inputs, "cpu")
    for peer in found:
        peers.check_peer(peer, reference, np.float64)
    # the same peers with the default delta must disagree: the check can fail
    default, _ = peers.match("huber(target, score)")
    numpy_peer = peers.numpy_peer(default, inputs)
    with pytest.raises(peers.PeerMismatch, match="differs from lossdsl's"):
        peers.check_peer(numpy_peer, reference, np.float64)
    assert peers.match("tweedie(y, z, -(-1.3))")[0].params == {"rho": 1.3}
    assert peers.match("quantile(y, p, 0.9)")[0].params == {"alpha": 0.9}
    assert peers.match("pinball(y, p)")[0].family is peers.FAMILIES["quantile"]


@pytest.mark.parametrize("text, reason", [
    ("huber(y, p) + 0.1*l1(p)", "not a single call"),
    ("2*mse(y, p)", "not a single call"),
    ("fair(y, p)", "no idiomatic peer is registered for 'fair'"),
    ("huber(y, 2*p)", "not a plain input name"),
    ("huber(y, p, d)", "is not a number"),
    ("mse(p, p)", "two roles"),
    ("bce_logits(y, z, 2.0)", "need pos_weight = 1"),
    ("sparse_cce_logits(y, z, label_smoothing=0.1)", "need label_smoothing = 0"),
])
def test_expressions_without_peers_say_why(text, reason):
    match, why = peers.match(text)
    assert match is None and reason in why


def test_a_wrong_peer_stops_the_benchmark(monkeypatch):
    match, _ = peers.match("mse(y, p)")
    inputs = peers.family_data(match, N, CLASSES, np.float64)
    compiled = lossdsl.compile("mse(y, p)")
    broken = peers.Family(**{**match.family.__dict__,
                             "numpy": (peers.numpy_half_mse_value,
                                       peers.numpy_half_mse_value_and_grad,
                                       peers.numpy_half_mse_grad_hess)})
    wrong = peers.Match(broken, match.inputs, match.params)
    with pytest.raises(peers.PeerMismatch, match="numpy value"):
        benchmark.run(compiled, "p", inputs, 1, wrong, include=("numpy",))
    reported = []
    result = benchmark.run(compiled, "p", inputs, 1, wrong, include=("numpy",),
                           on_mismatch=reported.append)
    assert "numpy" not in result.seconds and len(reported) == 1
    assert set(result.seconds) == {"lossdsl", "floor"}


@pytest.mark.parametrize("name, classes", [("bce_logits", 2), ("sparse_cce_logits", 5),
                                           ("kl_div", 4)])
def test_floor_reads_every_input_and_writes_fresh_outputs(name, classes):
    match, _ = peers.match(name)
    inputs = peers.family_data(match, 300, classes, np.float64)
    wrt = match.input_name(match.family.prediction)
    floor = peers.floor_peer(inputs, wrt, "cpu")
    x = inputs[wrt]
    rows = x.shape[0]
    width = x.shape[1] if x.ndim == 2 else 1
    expected_value = sum(float(a.sum()) * (1 if a.ndim == 2 else width)
                         for a in inputs.values())
    assert floor.tasks["value"]() == pytest.approx(expected_value)
    total, grad = floor.tasks["value+grad"]()
    assert total == pytest.approx(expected_value) and grad.shape == x.shape
    first = floor.tasks["grad+hess"]()
    second = floor.tasks["grad+hess"]()
    for a, b in zip(first, second, strict=True):
        assert a.shape == x.shape and a.dtype == x.dtype and a is not b
    assert rows == 300
    assert "prange" in floor.source()


def test_floor_by_a_vector_input_next_to_a_matrix_writes_vectors():
    # w*cce_logits(y, z) by w: the floor's outputs are shaped like w, one entry per row
    rng = np.random.default_rng(0)
    inputs = {"w": rng.normal(size=50), "y": rng.normal(size=(50, 3)),
              "z": rng.normal(size=(50, 3))}
    floor = peers.floor_peer(inputs, "w", "cpu")
    expected = inputs["w"] + inputs["y"].sum(axis=1) + inputs["z"].sum(axis=1)
    assert floor.tasks["value"]() == pytest.approx(expected.sum())
    total, grad = floor.tasks["value+grad"]()
    assert total == pytest.approx(expected.sum()) and np.allclose(grad, expected)
    assert all(a.shape == (50,) for a in floor.tasks["grad+hess"]())


def test_bench_shows_the_peers_code(capsys):
    status = cli.main(["bench", "bce_logits(t, s)", "-n", str(N), "--repeat", "1",
                       "--target", "cpu", "--pause", "0", "--show-peers"])
    out = capsys.readouterr().out
    assert status == 0
    assert "wrt s" in out and "no idiomatic peer" not in out
    header = next(line for line in out.splitlines() if line.startswith("task"))
    assert "floor" in header and "numpy" in header
    for task in peers.TASKS:
        assert re.search(rf"^{re.escape(task)}\s+\d", out, re.MULTILINE)
    assert "# ---- numpy" in out and "def numpy_bce_logits_value_and_grad" in out
    assert "# ---- floor" in out and "def kernel(" in out
    if AVAILABLE["torch"]:
        assert "F.binary_cross_entropy_with_logits(z, y)" in out
        assert "def torch_value_and_grad" in out
    if AVAILABLE["sklearn"]:
        assert "HalfBinomialLoss" in out and "gradient_hessian" in out
    assert "graph" not in header


def test_bench_without_peers_shows_only_the_floor(capsys):
    status = cli.main(["bench", "huber(y, p) + 0.1*l1(p)", "-n", str(N), "--repeat", "1",
                       "--target", "cpu", "--pause", "0", "--show-peers"])
    out = capsys.readouterr().out
    assert status == 0
    assert "no idiomatic peer is known for this loss" in out
    header = next(line for line in out.splitlines() if line.startswith("task"))
    assert header.split() == ["task", "lossdsl", "floor", "floor/lossdsl"]


def test_bench_graph_baselines_are_labelled_as_not_peers(capsys):
    status = cli.main(["bench", "fair(y, p)", "-n", str(N), "--repeat", "1", "--target", "cpu",
                       "--pause", "0", "--graph-baselines", "--no-torch"])
    out = capsys.readouterr().out
    assert status == 0
    assert "no idiomatic peer is registered for 'fair'" in out
    assert "numpy graph" in out and "not peers" in out


def test_bench_with_wrt_other_than_the_prediction_has_no_peers(capsys):
    status = cli.main(["bench", "mse(y, p)", "-n", str(N), "--repeat", "1", "--target", "cpu",
                       "--pause", "0", "--wrt", "y"])
    out = capsys.readouterr().out
    assert status == 0 and "differentiate by its prediction 'p', not by 'y'" in out


def test_bench_library_runs_one_family(monkeypatch, capsys):
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_library.py"
    spec = importlib.util.spec_from_file_location("bench_library", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.rows_for(10**7, 10) == 10**6 and module.rows_for(10**7, 1000) == 5 * 10**4
    monkeypatch.setattr(sys, "argv", ["bench_library.py", "--n", str(N), "--repeat", "1",
                                      "--pause", "0", "--only", "bce_logits", "--markdown",
                                      "--skip", "jax,torch.compile"])
    module.main()
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| bce_logits"))
    assert len(row.strip("|").split("|")) == 10  # the loss, lossdsl, floor, compute, 6 peers


@pytest.mark.skipif(not AVAILABLE["torch"], reason="needs torch")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's own, importing dynamo
def test_torch_compile_peers_are_built_lazily_and_skip_double_backward():
    # building does not compile (torch.compile compiles at the first call, which this test
    # does not make: it takes tens of seconds); bench_library checks the numbers before timing
    for name, has_grad_hess in (("mse", True), ("focal_logits", False)):
        match, _ = peers.match(name)
        inputs = peers.family_data(match, 50, CLASSES, np.float64)
        peer = peers.torch_peer(match, inputs, 1, compiled=True)
        assert peer.name == "torch.compile"
        assert ("grad+hess" in peer.tasks) == has_grad_hess
        assert has_grad_hess or "double backward" in peer.note
