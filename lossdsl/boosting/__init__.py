"""Gradient-boosting support shared by the XGBoost, LightGBM and CatBoost adapters: the objective
(roles, labels, Hessian policies, init score: ``objective``), exact leaf values (``leaves``) and
inputs drawn anew each round (``draws``: :class:`QueryDraws`, :class:`NormalDraws`,
:class:`UniformDraws`)."""

from .draws import NormalDraws, QueryDraws, UniformDraws

__all__ = ["NormalDraws", "QueryDraws", "UniformDraws"]
