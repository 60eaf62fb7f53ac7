"""Keras for the lossdsl.keras tests: the JAX backend in the test process, and the PyTorch
and TensorFlow backends in a subprocess each (Keras picks its backend once, at import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sweeps import SAMPLING

ROOT = Path(__file__).resolve().parents[1]

#: The backends run in subprocesses. On CI (CI=true without LOSSDSL_FULL_SWEEPS=1)
#: TensorFlow's alone: each subprocess imports Keras and its framework (tens of seconds);
#: PyTorch's runs in every full run.
OTHER_BACKENDS = ["tensorflow"] if SAMPLING else ["torch", "tensorflow"]

# How each backend run in a subprocess differentiates (the gradient of the values' sum: of
# the loss itself where it is one number) and reads back a tensor; the script after them
# imports numpy as np.
BACKEND_HELPERS = {
    "torch": textwrap.dedent('''
        import torch

        def gradient(loss, y, p, sample_weight=None):
            q = torch.tensor(p, requires_grad=True)
            loss(y, q, sample_weight=sample_weight).sum().backward()
            return q.grad.numpy()

        def numpy(value):
            return value.detach().cpu().numpy()
    '''),
    "tensorflow": textwrap.dedent('''
        import tensorflow as tf

        def gradient(loss, y, p, sample_weight=None):
            q = tf.Variable(p)
            with tf.GradientTape() as tape:
                value = loss(y, q, sample_weight=sample_weight)
            return tape.gradient(value, q).numpy()

        def numpy(value):
            return np.asarray(value)
    '''),
}


def keras_on_jax() -> ModuleType:
    """Keras on the JAX backend in this process; the calling test module is skipped where
    JAX or Keras is missing, or where Keras was imported with another backend."""
    pytest.importorskip("jax")
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "jax"
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip("keras was imported with another backend in this process",
                    allow_module_level=True)
    return keras


def run_on_backend(backend: str, script: str) -> dict[str, Any]:
    """Run ``script`` (after :data:`BACKEND_HELPERS`) with Keras on ``backend`` in a
    subprocess; the JSON it prints on its line starting ``RESULT ``."""
    pytest.importorskip(backend)
    pytest.importorskip("numba")
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", BACKEND_HELPERS[backend] + script],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    assert out["backend"] == backend
    return out
