"""Gradient-boosting support shared by the XGBoost, LightGBM and CatBoost adapters: the objective
(roles, labels, Hessian policies, init score: ``objective``) and exact leaf values (``leaves``)."""
