"""How to audit a trained run: :class:`AuditConfig`, validated at creation.

Set by ``privmed audit``'s options or a study file's ``audit`` section; its messages name
both (``audit.shadows`` / ``--shadows``). Light to import: the CLI reads its defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from privmed.errors import AUDIT_CANARIES, AUDIT_CANARY_KIND, AUDIT_CANARY_SIZE, AUDIT_SHADOWS, PrivmedError

from .design import ONE_RUN, TRAIN_VS_TEST

#: crafted: uniform-noise images with random labels (privmed.audit.canaries); mislabeled: test images, label flipped
CANARY_KINDS = ("crafted", "mislabeled")


@dataclass(frozen=True)
class AuditConfig:
    """How to audit. ``canaries=0``: the train-vs-test diagnostic only (no ε bound);
    ``shadows=0``: the loss attack only, ``shadows=K``: LiRA too."""

    shadows: int = 0
    canaries: int = 500
    canary_kind: str = "crafted"
    images_per_canary: int = 1
    workers: int = 1
    seed: int = 0
    alpha: float = 0.05
    bootstrap: int = 1000

    def __post_init__(self) -> None:
        if self.shadows < 0 or self.shadows == 1:
            raise PrivmedError(AUDIT_SHADOWS.format(shadows=self.shadows))
        if self.canaries < 0 or self.canaries == 1:
            raise PrivmedError(AUDIT_CANARIES.format(canaries=self.canaries))
        if self.canary_kind not in CANARY_KINDS:
            raise PrivmedError(AUDIT_CANARY_KIND.format(kind=self.canary_kind, known=", ".join(CANARY_KINDS)))
        if self.images_per_canary < 1 or (self.images_per_canary > 1 and self.canary_kind != "crafted"):
            raise PrivmedError(AUDIT_CANARY_SIZE.format(size=self.images_per_canary, kind=self.canary_kind))
        if self.workers < 1:
            raise PrivmedError(f"--workers {self.workers}: must be >= 1.")
        if not 0 < self.alpha < 0.5:
            raise PrivmedError(f"confidence {1 - self.alpha:g}: use a confidence in (0.5, 1), e.g. 0.95.")

    @property
    def design(self) -> str:
        """The design that gives the bound: ``one-run`` with canaries, else the diagnostic only."""
        return ONE_RUN if self.canaries else TRAIN_VS_TEST
