"""Gradient-boosting support shared by the XGBoost, LightGBM and CatBoost adapters: the objective
(roles, labels, Hessian policies, init score: ``objective``), exact leaf values (``leaves``) and
inputs drawn anew each round (``draws``: :class:`QueryDraws`)."""

from .draws import QueryDraws

__all__ = ["QueryDraws"]
