"""The private-training engine (privmed.privacy.engine): one step loop, its state, and the one checkpoint format."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from privmed.privacy.engine import Engine, make_plain, make_private, plan_schedule
from privmed.privacy.units import PrivacyUnit, resolve_unit
from privmed.training.checkpoint import CHECKPOINT_FORMAT, restore, upgrade_checkpoint, write_checkpoint

N = 60


def _data(seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(N, 5, generator=g), torch.randint(0, 2, (N, 1), generator=g).float())


def _engine(*, private: bool, noise: float = 1.0, clip: float = 1.0, unit: PrivacyUnit | None = None,
            replay_seed: int = 7, epochs: int = 2) -> Engine:
    torch.manual_seed(0)
    net = nn.Linear(5, 1)
    unit = unit or resolve_unit("image", None, max_images_per_patient=1, n=N)
    schedule = plan_schedule(unit, batch_size=20, epochs=epochs)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
    if private:
        return make_private(net, optimizer, _data(), unit=unit, schedule=schedule, noise_multiplier=noise,
                            clip_norm=clip, accountant="rdp", replay_seed=replay_seed)
    return make_plain(net, optimizer, _data(), unit=unit, schedule=schedule,
                      criterion=nn.BCEWithLogitsLoss(reduction="sum"), replay_seed=replay_seed)


def _backward(engine: Engine):
    """The classifier's losses: Opacus's mean when private, the sum over the expected batch when plain."""
    def backward(x, y):
        out = engine.criterion(engine.module(x), y)
        loss = out if engine.private else out / engine.schedule.expected_batch
        loss.backward()
        return float(loss.detach())
    return backward


def _weights(engine: Engine) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in engine.net.parameters()])


@pytest.mark.parametrize("physical", [None, 3])
def test_the_step_loop_with_zero_noise_and_no_clip_is_plain_training_over_the_same_batches(physical):
    private, plain = _engine(private=True, noise=0.0, clip=math.inf), _engine(private=False)
    for engine in (private, plain):
        for _ in range(2):
            engine.run_epoch(_backward(engine), physical_batch_size=physical)
    assert torch.allclose(_weights(private), _weights(plain), atol=1e-6)
    assert private.spent_steps == private.schedule.steps and plain.spent_steps == 0


def test_physical_chunks_change_nothing_but_memory():
    """A Poisson batch cut into chunks of 1, 4 or none gives the same clipped, noised step (one replayed noise)."""
    weights = []
    for physical in (None, 4, 1):
        engine = _engine(private=True, noise=0.5)
        engine.run_epoch(_backward(engine), physical_batch_size=physical)
        weights.append(_weights(engine))
    assert all(torch.allclose(weights[0], w, atol=1e-5) for w in weights[1:])


def test_every_poisson_batch_is_one_step_and_after_step_sees_each():
    engine, seen, chunks = _engine(private=True), [], []

    def backward(x, y):
        chunks.append(len(x))
        return _backward(engine)(x, y)

    engine.run_epoch(backward, physical_batch_size=2, after_step=lambda: seen.append(engine.spent_steps))
    assert seen == list(range(1, engine.schedule.steps_per_epoch + 1))  # one accounted step per batch, in order
    assert max(chunks) <= 2 and len(chunks) > len(seen)


def test_state_dict_carries_the_privacy_spend_and_a_resumed_engine_continues_it():
    first = _engine(private=True)
    first.run_epoch(_backward(first))
    state = first.state_dict()
    resumed = _engine(private=True)
    resumed.load_state_dict(state)
    assert resumed.spent_steps == first.spent_steps > 0
    assert torch.equal(_weights(resumed), _weights(first))
    resumed.run_epoch(_backward(resumed))
    assert resumed.spent_steps == 2 * first.spent_steps  # the spend goes on, it is not reset


def test_state_dict_holds_no_generator_state():
    """The secret sampling and noise generators are never written: a resumed run draws fresh ones."""
    engine = _engine(private=True)
    engine.run_epoch(_backward(engine))

    def leaves(value):
        if isinstance(value, dict):
            return [leaf for v in value.values() for leaf in leaves(v)]
        if isinstance(value, (list, tuple)):
            return [leaf for v in value for leaf in leaves(v)]
        return [value]

    assert not any(isinstance(leaf, torch.Generator) for leaf in leaves(engine.state_dict()))


def test_patients_are_sampled_whole_through_the_engine():
    groups = np.repeat(np.arange(N // 3), 3)
    unit = PrivacyUnit("patient", groups, 3)
    engine = _engine(private=True, unit=unit)
    rows = []
    engine.run_epoch(lambda x, y: rows.append(x) or _backward(engine)(x, y))
    data = _data().tensors[0]
    for batch in rows:
        picked = {int(np.flatnonzero((data == r).all(1).numpy())[0]) for r in batch}
        patients = {int(groups[i]) for i in picked}
        assert picked == {i for i in range(N) if groups[i] in patients}  # every image of a sampled patient


def test_one_checkpoint_format_round_trips_engine_and_parts(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    engine, other = _engine(private=True), nn.Linear(2, 2)
    engine.run_epoch(_backward(engine))
    write_checkpoint(tmp_path, epoch=1, engine=engine, history=[{"epoch": 1}], parts={"other": other},
                     extra={"noise_multiplier": 1.0})
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["format"] == CHECKPOINT_FORMAT and checkpoint["noise_multiplier"] == 1.0
    fresh, fresh_other = _engine(private=True), nn.Linear(2, 2)
    restore(checkpoint, fresh, {"other": fresh_other})
    assert fresh.spent_steps == engine.spent_steps
    assert torch.equal(fresh_other.weight, other.weight) and torch.equal(_weights(fresh), _weights(engine))


def test_older_checkpoints_of_the_classifier_and_the_generator_move_into_the_format():
    classifier = {"epoch": 2, "model": {"w": 1}, "optimizer": {"o": 2}, "accountant": {"a": 3}, "average": None,
                  "history": [], "torch_rng": None, "best": {}, "plan": {"noise_multiplier": 1.0}}
    generator = {"epoch": 1, "generator": {"g": 1}, "discriminator": {"d": 2}, "ema": {"e": 3}, "opt_g": {"og": 4},
                 "opt_d": {"od": 5}, "accountant": {"a": 6}, "history": [], "torch_rng": None,
                 "noise_multiplier": 2.0}
    c, g = upgrade_checkpoint(classifier), upgrade_checkpoint(generator)
    assert c["engine"] == {"module": {"w": 1}, "optimizer": {"o": 2}, "accountant": {"a": 3}, "average": None}
    assert c["plan"] == {"noise_multiplier": 1.0} and c["parts"] == {} and c["format"] == CHECKPOINT_FORMAT
    assert g["engine"] == {"module": {"d": 2}, "optimizer": {"od": 5}, "accountant": {"a": 6}, "average": None}
    assert g["parts"] == {"generator": {"g": 1}, "ema": {"e": 3}, "opt_g": {"og": 4}}
    assert upgrade_checkpoint(c) is c and upgrade_checkpoint(None) is None


def test_one_step_is_one_batch_one_accounted_release_and_its_mean_loss_whatever_the_chunks():
    data = _data()
    xb, yb = data.tensors[0][:10], data.tensors[1][:10]
    losses = []
    for physical in (None, 3):
        engine = _engine(private=True, noise=0.0, clip=math.inf)
        losses.append(engine.step(xb, yb, _backward(engine), physical_batch_size=physical))
        assert engine.spent_steps == 1
    with torch.no_grad():
        expected = float(nn.functional.binary_cross_entropy_with_logits(_engine(private=False).net(xb), yb))
    assert losses[0] == pytest.approx(expected) and losses[1] == pytest.approx(expected)
