"""Membership-inference audit: attack math, the ε lower bound, and audits of real runs."""

import math

import numpy as np
import pytest
from scipy import stats

from privmed.audit.attacks import lira_scores, logit_confidence, loss_attack_scores
from privmed.audit.bounds import clopper_pearson, epsilon_lower_bound, summarize_attack, tpr_at_fpr
from privmed.audit.membership import AuditConfig, shadow_masks
from privmed.cli import main
from privmed.errors import PrivmedError


# --------------------------------------------------------------------------- attack math


def test_loss_and_logit_confidence_by_hand():
    scores = np.array([0.9, 0.2, 0.6])
    labels = np.array([1, 1, 0])
    np.testing.assert_allclose(loss_attack_scores(scores, labels), np.log([0.9, 0.2, 0.4]))
    np.testing.assert_allclose(logit_confidence(scores, labels), np.log([0.9 / 0.1, 0.2 / 0.8, 0.4 / 0.6]))


def test_lira_separates_members_whose_confidence_rises_when_trained_on():
    rng = np.random.default_rng(0)
    n, k = 400, 8
    difficulty = rng.normal(0, 2, n)  # per-sample offset LiRA must calibrate away
    masks = shadow_masks(n, k, seed=1)
    shadow = difficulty + 1.0 * masks + rng.normal(0, 0.3, (k, n))
    member = rng.random(n) < 0.5
    target = difficulty + 1.0 * member + rng.normal(0, 0.3, n)
    lira = lira_scores(target, shadow, masks)
    from sklearn.metrics import roc_auc_score

    # the global-threshold loss attack is confused by per-sample difficulty; LiRA is not
    assert roc_auc_score(member, lira) > 0.9 > roc_auc_score(member, target) + 0.1


def test_shadow_masks_give_every_sample_in_and_out_shadows():
    masks = shadow_masks(101, 4, seed=0)
    assert masks.shape == (4, 101)
    assert (masks.sum(0) == 2).all()


# --------------------------------------------------------------------------- bounds


def test_clopper_pearson_edge_cases_by_hand():
    low, high = clopper_pearson(0, 20, 0.05)
    assert low == 0.0 and high == pytest.approx(1 - 0.05 ** (1 / 20))
    low, high = clopper_pearson(20, 20, 0.05)
    assert high == 1.0 and low == pytest.approx(0.05 ** (1 / 20))
    low, high = clopper_pearson(7, 20, 0.025)
    ci = stats.binomtest(7, 20).proportion_ci(confidence_level=0.95, method="exact")
    assert (low, high) == pytest.approx((ci.low, ci.high))


def test_tpr_at_fpr_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    member = np.array([1, 0, 1, 1, 0, 0], bool)
    assert tpr_at_fpr(scores, member, 0.0) == pytest.approx(1 / 3)
    assert tpr_at_fpr(scores, member, 1 / 3) == pytest.approx(1.0)


def test_perfect_attack_gives_a_large_bound_and_no_attack_none():
    member = np.r_[np.ones(2000, bool), np.zeros(2000, bool)]
    perfect = member.astype(float)
    assert epsilon_lower_bound(perfect, member, delta=1e-5) > 4
    rng = np.random.default_rng(0)
    assert epsilon_lower_bound(rng.random(4000), member, delta=1e-5) < 0.3


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("seed", range(5))
def test_bound_never_exceeds_the_epsilon_of_an_exact_dp_mechanism(epsilon, seed):
    """Randomised response is exactly epsilon-DP and the best attack is its own output: the
    bound must stay below epsilon while getting reasonably close with 20,000 trials."""
    rng = np.random.default_rng(1000 + seed)  # independent of the bound's own half split
    n = 10_000
    member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    keep = rng.random(2 * n) < math.exp(epsilon) / (1 + math.exp(epsilon))
    output = np.where(keep, member, ~member).astype(float) + rng.random(2 * n) * 1e-6
    bound = epsilon_lower_bound(output, member, delta=0.0, seed=seed)
    assert bound <= epsilon
    assert bound > 0.7 * epsilon


def test_summary_has_cis_around_the_point_estimates():
    rng = np.random.default_rng(0)
    member = rng.random(600) < 0.5
    scores = member + rng.normal(0, 1, 600)
    s = summarize_attack("loss", scores, member, delta=1e-4, n_resamples=200)
    assert s.auc_ci[0] <= s.auc <= s.auc_ci[1]
    assert 0.65 < s.auc < 0.85


def test_bad_audit_options():
    for kwargs in ({"shadows": 1}, {"canaries": 1}, {"workers": 0}, {"canary_kind": "shiny"}):
        with pytest.raises(PrivmedError):
            AuditConfig(**kwargs)


# --------------------------------------------------------------------------- audits of real runs


FAST = ["--image-size", "32", "--epochs", "30", "--bootstrap", "100"]


@pytest.fixture(scope="module")
def audit_data(tmp_path_factory):
    from privmed.data.phantom import PhantomSpec, write_phantom_dataset

    root = tmp_path_factory.mktemp("audit_phantom")
    write_phantom_dataset(root, PhantomSpec(n_samples=400, image_size=32, seed=5))
    return root


def _train(data, out, *extra):
    assert main(["train", "--data", str(data), "--out", str(out), *FAST, *extra]) == 0


def _audit(run, capsys, *extra):
    code = main(["audit", str(run), "--bootstrap", "100", *extra])
    out = capsys.readouterr().out
    assert code == 0, out
    return out


def test_non_private_model_with_canaries_gives_a_clearly_positive_bound(audit_data, tmp_path, capsys):
    from privmed import rundir

    _train(audit_data, tmp_path / "np")
    _audit(tmp_path / "np", capsys, "--shadows", "2", "--canaries", "400")
    result = rundir.read_json(tmp_path / "np" / "audit" / "audit_crafted_canaries400.json")
    assert result["claimed_epsilon"] == "inf"
    assert max(a["eps_lower_bound"] for a in result["attacks"]) > 0.5
    # canaries never reach the run's own outputs
    predictions = (tmp_path / "np" / rundir.PREDICTIONS).read_text()
    assert predictions.count("\n") == 401


@pytest.mark.parametrize("epsilon,seed", [(1.0, 0), (3.0, 1)])
def test_dp_run_bound_stays_below_claimed_epsilon(audit_data, tmp_path, capsys, epsilon, seed):
    from privmed import rundir

    run = tmp_path / "dp"
    _train(audit_data, run, "--epsilon", str(epsilon), "--seed", str(seed))
    _audit(run, capsys, "--shadows", "2", "--canaries", "400", "--seed", str(seed))
    result = rundir.read_json(run / "audit" / "audit_crafted_canaries400.json")
    assert result["bound_holds"]
    assert all(a["eps_lower_bound"] <= result["claimed_epsilon"] for a in result["attacks"])


def test_audit_resumes_from_saved_shadows(audit_data, tmp_path, capsys):
    run = tmp_path / "np"
    _train(audit_data, run)
    _audit(run, capsys, "--shadows", "2")
    saved = sorted((run / "audit" / "shadows").rglob("shadow_*.npz"))
    assert len(saved) == 2
    stamps = [p.stat().st_mtime_ns for p in saved]
    _audit(run, capsys, "--shadows", "2")
    assert [p.stat().st_mtime_ns for p in saved] == stamps  # reused, not retrained


def test_parallel_shadow_workers_train_the_same_shadows_as_one_process(audit_data, tmp_path, capsys):
    import numpy as np

    run = tmp_path / "np"
    _train(audit_data, run, "--epochs", "5")
    _audit(run, capsys, "--shadows", "2", "--shadow-dir", str(tmp_path / "serial"))
    _audit(run, capsys, "--shadows", "2", "--workers", "2", "--shadow-dir", str(tmp_path / "parallel"))
    serial = sorted((tmp_path / "serial").rglob("shadow_*.npz"))
    parallel = sorted((tmp_path / "parallel").rglob("shadow_*.npz"))
    assert [p.name for p in serial] == [p.name for p in parallel] == ["shadow_0.npz", "shadow_1.npz"]
    for a, b in zip(serial, parallel):
        sa, sb = np.load(a), np.load(b)
        assert np.array_equal(sa["mask"], sb["mask"])
        np.testing.assert_allclose(sa["confidence"], sb["confidence"], rtol=1e-4, atol=1e-4)


def test_audit_of_something_that_is_not_a_run(tmp_path, capsys):
    assert main(["audit", str(tmp_path)]) == 2
    assert "not a finished privmed run" in capsys.readouterr().err


# --------------------------------------------------------------------------- generators


def test_dcr_flags_a_generator_that_copies_its_training_images():
    from privmed.audit.synthetic import dcr_membership, distance_to_closest

    rng = np.random.default_rng(0)
    members, non_members = rng.random((200, 16, 16)), rng.random((200, 16, 16))
    assert distance_to_closest(members[:3], members)[0] == pytest.approx(0.0, abs=1e-6)
    copier = members[:150] + rng.normal(0, 0.01, (150, 16, 16))
    honest = rng.random((300, 16, 16))
    leaked, medians = dcr_membership(synthetic=copier, members=members, non_members=non_members, delta=1e-4,
                                     n_resamples=100)
    assert leaked.auc > 0.8 and leaked.eps_lower_bound > 0.5
    assert medians["median_dcr_members"] < medians["median_dcr_non_members"]
    clean, _ = dcr_membership(synthetic=honest, members=members, non_members=non_members, delta=1e-4,
                              n_resamples=100)
    assert 0.4 < clean.auc < 0.6 and clean.eps_lower_bound < 0.3
