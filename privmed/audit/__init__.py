"""Empirical privacy audits: membership inference against trained models and generators.

``design`` (who is in training, and whether that was randomised), ``one_run`` (the ε lower
bound from one training run with coin-flipped canaries), ``bounds`` (Clopper–Pearson for
independent trials), ``gdp`` (the Gaussian-DP estimate), ``summary`` (what one attack
reports), ``attacks`` (loss, LiRA), ``membership`` (``privmed audit``), ``synthetic`` and
``generator`` (``privmed audit-synthetic``).
"""
