"""Delta: the one place privmed resolves it, for every mechanism and every audit.

A run, a generator, private evolution and a membership audit (its retrained target and
its shadows) all take delta from :func:`resolve_delta` of their unit of privacy: the
configured ``privacy.delta``, else 1 / (10 N) with N the number of protected *units*
(patients at the patient unit, not images), so the same data and configuration give the
same delta whichever command reads them.
"""

from __future__ import annotations

from privmed.privacy.accounting import check_delta, default_delta
from privmed.privacy.units import PrivacyUnit


def resolve_delta(unit: PrivacyUnit, configured: float | None, *, check: bool = True) -> float:
    """``configured``, else 1 / (10 x ``unit.n_units``); with ``check``, reject delta >= 1/N
    (:func:`~privmed.privacy.accounting.check_delta`'s message says what to use instead)."""
    delta = configured if configured is not None else default_delta(unit.n_units)
    if check:
        check_delta(delta, unit.n_units)
    return delta
