"""privmed: privacy-preserving medical-image AI.

Train diagnostic classifiers with a formal differential-privacy guarantee
(DP-SGD through Opacus), evaluate them with bootstrap confidence intervals,
and measure what privacy costs in accuracy and fairness.
"""

__version__ = "0.1.0"
