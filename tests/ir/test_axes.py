"""Axes (``lossdsl.ir.axes``): spellings parsed and built in one place."""

from __future__ import annotations

import pickle

import pytest

import lossdsl
from lossdsl.ir.axes import Axis, counted_axis
from lossdsl.passes import shapes


def test_constructors_spell_what_the_generated_kernels_name():
    assert Axis.samples(0) == "n0" and Axis.samples(12).classes() == "n12k"
    assert Axis.table_rows(1) == "t1"
    assert Axis("n3k").samples_of() == "n3" and Axis("n3k").domain == 3
    assert Axis.samples(2).kept_count() == "n2#kept"


def test_questions_instead_of_slicing():
    samples, classes, rows = Axis("n1"), Axis("n1k"), Axis("t0")
    assert samples.is_samples and not samples.is_classes and not samples.is_table_rows
    assert classes.is_classes and not classes.is_samples
    assert rows.is_table_rows and not rows.is_samples and not rows.is_classes


@pytest.mark.parametrize("spelling", ["", "n", "k", "nk", "n0kk", "t0k", "x1", "n-1", "0"])
def test_what_is_not_an_axis_is_refused(spelling):
    with pytest.raises(ValueError):
        Axis(spelling)
    assert Axis.parse(spelling) is None
    assert Axis.parse(3) is None


def test_only_the_right_kind_answers():
    with pytest.raises(ValueError):
        Axis("n0k").classes()
    with pytest.raises(ValueError):
        Axis("n0").samples_of()
    with pytest.raises(ValueError):
        Axis("t0").kept_count()


def test_count_leaves_say_what_they_count():
    assert counted_axis("n0k") == ("n0k", False)
    assert counted_axis("n1#kept") == ("n1", True)
    with pytest.raises(ValueError):
        counted_axis("#kept")


def test_an_axis_is_a_string_to_everything_else():
    axis = Axis("n0k")
    assert isinstance(axis, str) and hash(axis) == hash("n0k") and f"{axis}" == "n0k"
    assert pickle.loads(pickle.dumps(axis)) == "n0k"
    assert type(pickle.loads(pickle.dumps(axis))) is Axis


def test_specialized_graphs_carry_axis_values():
    definition = lossdsl.compile("sparse_cce_logits(y, z)").loss.definition
    typed = shapes.specialize(definition.graph, {"y": 1, "z": 2}, definition.inputs)
    assert typed.input_axes == {"y": ("n0",), "z": ("n0", "n0k")}
    assert all(type(axis) is Axis for axes in typed.input_axes.values() for axis in axes)
