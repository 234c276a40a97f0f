"""privacy.json as a typed record: one writer (rundir.write_record), one reader (rundir.read_record).

The bytes written must stay what privmed wrote before the record existed (``PrivacyLedger.to_dict`` through
``rundir.write_json``), or the digest sealed beside a ledger and kept in ``best.pt`` would stop matching.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from privmed import rundir
from privmed.errors import JSON_UNREADABLE, PRIVACY_RECORD_MALFORMED, PRIVACY_RECORD_MISSING, PrivmedError
from privmed.privacy.accounting import Mechanism
from privmed.privacy.ledger import PrivacyLedger
from privmed.privacy.record import PrivacyRecord, Stage
from privmed.privacy.units import PrivacyUnit


def _before(ledger: PrivacyLedger) -> dict[str, Any]:
    """``PrivacyLedger.to_dict`` as it was before the typed record (privmed a23145c), kept here verbatim."""
    sgd = ledger.stage("dp_sgd") or (ledger.mechanisms[-1] if ledger.mechanisms else None)
    eps = ledger.epsilon
    alone = ledger.stage_epsilons()
    return {
        "private": ledger.private,
        "epsilon": "inf" if math.isinf(eps) else eps,
        "delta": ledger.delta if ledger.private else None,
        "accountant": ledger.accountant,
        "noise_multiplier": sgd.noise_multiplier if sgd else 0.0,
        "sample_rate": sgd.sample_rate if sgd else None,
        "steps": sgd.steps if sgd else 0,
        "clip_norm": "inf" if math.isinf(ledger.clip_norm) else ledger.clip_norm,
        "n_private_samples": ledger.n_private,
        "unit": ledger.unit,
        "protects": ledger.who,
        "max_images_per_patient": ledger.max_per_unit if ledger.unit == "patient" else None,
        "stages": [{**m.to_dict(), "epsilon_alone": e} for m, e in zip(ledger.mechanisms, alone)],
        "non_private_reasons": ledger.reasons,
        "validation_choices": ledger.validation_choices,
        "free_inputs": ledger.free_inputs,
        # added by issue 32 (what epsilon does not cover), only where there is an accounted stage
        **({"not_covered": ledger.not_covered} if ledger.mechanisms else {}),
        "summary": ledger._summary(eps, alone),
    }


def _patient_ledger() -> PrivacyLedger:
    unit = PrivacyUnit(name="patient", groups=np.arange(145) % 95, max_per_unit=2)
    ledger = PrivacyLedger.for_unit(unit, delta=1e-3, accountant="rdp", clip_norm=1.0, n_private=145)
    ledger.mechanisms += [Mechanism("generator", 1.3, 0.1, 40), Mechanism("dp_sgd", 0.9609375, 1 / 3, 3)]
    ledger.validation_choices.append("The checkpoint was selected on the private validation split.")
    ledger.free_inputs.append("Synthetic images from the phantom: made without patient data")
    return ledger


def _image_ledger() -> PrivacyLedger:
    ledger = PrivacyLedger(delta=1e-4, accountant="prv", clip_norm=0.5, n_private=300)
    ledger.mechanisms.append(Mechanism("dp_sgd", 2, 0.25, 8))  # an int noise multiplier stays an int
    return ledger


def _noiseless_ledger() -> PrivacyLedger:
    ledger = PrivacyLedger(delta=1e-4, accountant="prv", clip_norm=math.inf, n_private=300)
    ledger.mechanisms.append(Mechanism("dp_sgd", 0.0, 0.25, 8))  # epsilon 'inf', a stage alone 'inf'
    return ledger


def _plain_ledger() -> PrivacyLedger:
    ledger = PrivacyLedger(delta=1e-4, accountant="prv", clip_norm=math.inf, n_private=300)
    ledger.non_private_reasons.append("The classifier was trained without DP-SGD.")
    return ledger


LEDGERS = [_patient_ledger, _image_ledger, _noiseless_ledger, _plain_ledger]


@pytest.mark.parametrize("make", LEDGERS, ids=lambda f: f.__name__.strip("_"))
def test_the_bytes_written_are_what_privmed_wrote_before(make, tmp_path):
    ledger = make()
    rundir.write_json(tmp_path / "before.json", _before(ledger))
    rundir.write_record(tmp_path, ledger.record())
    assert (tmp_path / rundir.PRIVACY).read_bytes() == (tmp_path / "before.json").read_bytes()


@pytest.mark.parametrize("make", LEDGERS, ids=lambda f: f.__name__.strip("_"))
def test_ledger_to_file_to_record_round_trips_byte_for_byte(make, tmp_path):
    record = make().record()
    rundir.write_record(tmp_path / "a", record)
    read = rundir.read_record(tmp_path / "a")
    assert read == record
    rundir.write_record(tmp_path / "b", read)  # what `privmed synth sample` does with a generator's record
    assert (tmp_path / "b" / rundir.PRIVACY).read_bytes() == (tmp_path / "a" / rundir.PRIVACY).read_bytes()


def test_the_record_is_typed(tmp_path):
    rundir.write_record(tmp_path, _noiseless_ledger().record())
    record = rundir.read_record(tmp_path)
    assert record.private is False and record.epsilon == math.inf and record.clip_norm == math.inf
    assert record.delta is None and record.unit == "image"
    assert record.stages == (Stage(stage="dp_sgd", noise_multiplier=0.0, sample_rate=0.25, steps=8,
                                   epsilon_alone=math.inf),)
    assert isinstance(record.non_private_reasons, tuple) and "added no noise" in record.non_private_reasons[0]
    with pytest.raises(AttributeError):
        record.private = True  # frozen


def test_a_ledger_written_before_is_still_sealed_after(tmp_path):
    ledger = _patient_ledger()
    rundir.write_json(tmp_path / rundir.PRIVACY, _before(ledger))
    kept = rundir.seal_ledger(tmp_path)
    rundir.write_record(tmp_path, ledger.record())
    rundir.check_ledger(tmp_path, kept=kept)  # neither the seal beside it nor best.pt's digest is broken


def test_a_record_written_before_the_patient_unit_reads_as_image(tmp_path):
    old = {"private": True, "epsilon": 2.5, "delta": 1e-5, "accountant": "prv", "noise_multiplier": 1.1,
           "sample_rate": 0.01, "steps": 500, "clip_norm": 1.0, "n_private_samples": 1000,
           "stages": [{"stage": "dp_sgd", "noise_multiplier": 1.1, "sample_rate": 0.01, "steps": 500}],
           "non_private_reasons": [], "validation_choices": [], "summary": "(epsilon=2.5, delta=1e-05)-DP"}
    (tmp_path / rundir.PRIVACY).write_text(json.dumps(old))
    record = rundir.read_record(tmp_path)
    assert record.unit == "image" and record.protects is None and record.max_images_per_patient is None
    assert record.free_inputs == () and record.stages[0].epsilon_alone is None
    assert record.epsilon == 2.5 and record.stages[0].steps == 500
    assert "epsilon_alone" not in record.to_dict()["stages"][0]


def test_the_phantom_origin_record_keeps_its_short_form(tmp_path):
    record = PrivacyRecord.data_independent_origin(source="privmed phantom (n_samples=10)", summary="costs nothing")
    rundir.write_record(tmp_path, record)
    written = json.loads((tmp_path / rundir.PRIVACY).read_text())
    assert written == {"private": True, "data_independent": True, "source": "privmed phantom (n_samples=10)",
                       "stages": [], "summary": "costs nothing"}
    assert list(written) == ["private", "data_independent", "source", "stages", "summary"]
    assert rundir.read_record(tmp_path) == record


def test_a_missing_record_names_the_file(tmp_path):
    with pytest.raises(PrivmedError) as err:
        rundir.read_record(tmp_path / "run")
    assert str(err.value) == PRIVACY_RECORD_MISSING.format(path=tmp_path / "run" / rundir.PRIVACY)


def test_a_record_cut_short_names_the_file(tmp_path):
    rundir.write_record(tmp_path, _image_ledger().record())
    path = tmp_path / rundir.PRIVACY
    path.write_text(path.read_text()[:40])
    with pytest.raises(PrivmedError) as err:
        rundir.read_record(tmp_path)
    assert str(err.value).startswith(JSON_UNREADABLE.split("{path}")[0] + str(path))


@pytest.mark.parametrize("edit, reason", [
    (lambda d: [d], "a JSON list, not an object"),
    (lambda d: {k: v for k, v in d.items() if k != "epsilon"}, "it has no 'epsilon'"),
    (lambda d: {**d, "private": "yes"}, "'private' is 'yes', not true or false"),
    (lambda d: {**d, "epsilon": "lots"}, "'epsilon' is 'lots', not a number"),
    (lambda d: {**d, "steps": 2.5}, "'steps' is 2.5, not a whole number"),
    (lambda d: {**d, "unit": None}, "'unit' is None, not text"),
    (lambda d: {**d, "free_inputs": "one"}, "'free_inputs' is 'one', not a list of sentences"),
    (lambda d: {**d, "stages": [{"stage": "dp_sgd"}]}, "a stage has no 'noise_multiplier'"),
    (lambda d: {**d, "stages": [{**d["stages"][0], "steps": "8"}]}, "a stage's value is not a whole number"),
    (lambda d: {"private": True, "data_independent": True, "stages": [], "summary": "s"}, "it has no 'source'"),
])
def test_a_malformed_record_names_the_file_and_what_is_wrong(edit, reason, tmp_path):
    (tmp_path / rundir.PRIVACY).write_text(json.dumps(edit(_image_ledger().record().to_dict())))
    with pytest.raises(PrivmedError) as err:
        rundir.read_record(tmp_path)
    message = str(err.value)
    head = PRIVACY_RECORD_MALFORMED.split("{reason}")[0].format(path=tmp_path / rundir.PRIVACY)
    assert message.startswith(head) and reason in message


def test_the_record_says_n_is_public_and_test_outputs_are_not_dp(tmp_path):
    """Issue 32: the ledger says what its epsilon takes as given (N) and what it does not cover (test outputs)."""
    from privmed.privacy.ledger import NOT_COVERED_SHORT, NOT_DP_OUTPUTS, PUBLIC_N

    record = _patient_ledger().record()
    assert record.not_covered == (PUBLIC_N.format(unit="patient"), NOT_DP_OUTPUTS)
    assert "N" in record.not_covered[0] and "treated as public" in record.not_covered[0]
    assert NOT_COVERED_SHORT in record.summary
    rundir.write_record(tmp_path, record)
    assert json.loads((tmp_path / rundir.PRIVACY).read_text())["not_covered"] == list(record.not_covered)
    assert rundir.read_record(tmp_path).not_covered == record.not_covered
    # a record written before has none, and reads as before
    old = record.to_dict()
    del old["not_covered"]
    assert PrivacyRecord.from_dict(old).not_covered == ()
    assert _plain_ledger().record().not_covered == ()


def test_a_group_privacy_statement_whose_delta_exceeds_one_is_marked_vacuous():
    from privmed.privacy.units import group_privacy_sentence

    assert "vacuous" not in group_privacy_sentence(1.0, 1e-5)  # (2, 5.4e-05) and (5, 0.0027)
    sentence = group_privacy_sentence(8.0, 1e-5)  # 5 images: delta = 5 e^32 1e-5, about 4e9
    assert sentence.count("vacuous") == 1 and "(40, 3.9e+09) (vacuous" in sentence
    ledger = _image_ledger()
    ledger.mechanisms[0] = Mechanism("dp_sgd", 0.3, 0.25, 400)  # a large image-level epsilon
    assert ledger.epsilon > 5 and "vacuous" in ledger.summary()
