"""Private evolution of the phantom (``privmed synth evolve``): DP votes, accounting, movement, use downstream."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from privmed import rundir
from privmed.cli import main
from privmed.config import config_from_dict
from privmed.data.phantom.draw import _render
from privmed.data.phantom.population import _draw_population
from privmed.data.phantom.spec import CLASS_DIRS, PhantomSpec
from privmed.errors import PrivmedError
from privmed.privacy.accounting import Mechanism, epsilon_for
from privmed.privacy.randomness import secret_generator
from privmed.synth import candidates as cand
from privmed.synth.config import EVOLVE_NEEDS_EPSILON, evolve_config_from_dict
from privmed.synth.evolve import (EVOLVE_EPSILON_UNREACHABLE, STAGE, VOTE_CONTRIBUTION, VOTES_STREAM, evolve,
                                  noisy_histogram, offspring, prior_means, vote_histogram)
from privmed.synth.evolve_output import MANIFEST, POPULATION
from privmed.training.trainer import train

SMALL = {"rounds": 3, "population": 12, "n": 40}


@pytest.fixture(autouse=True)
def one_thread():
    """Scattering with 2 OpenMP threads collapses on a busy 2-core machine (privmed.threads); one thread is fast."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def evolve_config(root, out, *, epsilon=5.0, **evolution):
    return evolve_config_from_dict({"out": str(out), "data": {"path": str(root), "image_size": 32},
                                    "privacy": {"epsilon": epsilon}, "evolve": {**SMALL, **evolution}})


@pytest.fixture(scope="module")
def evolved(phantom_root, tmp_path_factory):
    torch.set_num_threads(1)
    return evolve(evolve_config(phantom_root, tmp_path_factory.mktemp("evolved") / "e"))


@pytest.fixture(scope="module")
def large_bright_root(tmp_path_factory):
    """A private data set of phantoms whose masses are all large and high-contrast (beyond the prior's typical)."""
    root = tmp_path_factory.mktemp("large")
    spec = PhantomSpec(n_samples=160, image_size=32, seed=11)
    table, prm = _draw_population(spec, np.random.default_rng(11))
    prm["radius"] = np.full(len(table), 0.27)
    prm["contrast"] = np.full(len(table), 0.5)
    images = _render(prm, slice(0, len(table)), 32, np.random.default_rng(12))
    paths = []
    for i, (image, label) in enumerate(zip(images, table["label"])):
        rel = f"{CLASS_DIRS[label]}/{i:04d}.png"
        (root / CLASS_DIRS[label]).mkdir(exist_ok=True)
        Image.fromarray(np.round(image * 255).astype(np.uint8), mode="L").save(root / rel)
        paths.append(rel)
    table.assign(path=paths)[["path", "split", "label", "patient_id"]].to_csv(root / "metadata.csv", index=False)
    return root


# ---------------------------------------------------------------- the vote


def test_a_patient_casts_one_vote_in_total_whatever_their_image_count():
    private = torch.randn(6, 5)
    candidates = (torch.randn(4, 5), torch.randn(4, 5))
    labels = np.array([0, 0, 0, 1, 1, 0])
    groups = np.array([0, 0, 0, 1, 1, 2])  # 3 images, 2 images, 1 image
    hist = vote_histogram(private, labels, groups, candidates)
    assert hist.sum() == pytest.approx(3.0)
    for patient in range(3):  # each patient alone: total weight 1, L2 norm <= 1 (the mechanism's sensitivity)
        rows = groups == patient
        alone = vote_histogram(private[rows], labels[rows], np.zeros(rows.sum(), dtype=int), candidates)
        assert alone.sum() == pytest.approx(1.0) and np.linalg.norm(alone) <= 1.0 + 1e-12
    # removing one patient changes the histogram by exactly their vote
    keep = groups != 0
    without = vote_histogram(private[keep], labels[keep], np.array([0, 0, 1]), candidates)
    assert np.linalg.norm(hist - without) <= 1.0 + 1e-12


def test_the_vote_noise_is_secret_not_from_the_seed():
    hist = np.zeros((2, 8))
    a, b = (noisy_histogram(hist, sigma=1.0, generator=secret_generator(stream=VOTES_STREAM)) for _ in range(2))
    assert not np.allclose(a, b)
    replay = [noisy_histogram(hist, sigma=1.0, generator=secret_generator(stream=VOTES_STREAM, replay_seed=3))
              for _ in range(2)]
    assert np.allclose(*replay)


def test_a_replayable_evolution_shows_no_epsilon_per_round(phantom_root, evolved, tmp_path):
    """Issue 32: replayable vote noise makes the folder NOT PRIVATE; its history.csv once showed an epsilon."""
    from privmed.privacy.ledger import NOT_PRIVATE_EPSILON

    config = evolve_config_from_dict({"out": str(tmp_path / "replay"), "data": {"path": str(phantom_root),
                                                                              "image_size": 32},
                                      "privacy": {"epsilon": 5.0, "replayable_noise": True}, "evolve": SMALL})
    replayed = evolve(config)
    assert rundir.read_record(replayed).private is False
    assert set(pd.read_csv(replayed / rundir.HISTORY)["epsilon"]) == {NOT_PRIVATE_EPSILON}
    assert pd.read_csv(evolved / rundir.HISTORY)["epsilon"].astype(float).is_monotonic_increasing  # private: numbers


def test_mutation_stays_in_the_priors_range_and_moves_less_with_a_smaller_step():
    prior = cand.CandidatePrior.measured(seed=0)
    rng = np.random.default_rng(0)
    population = prior.draw(1, 200, rng)
    moved = {step: prior.mutate(population, 1, step=step, rng=rng) for step in (0.02, 0.3)}
    for key in ("radius", "contrast", "n_spic", "amp"):
        assert (moved[0.3][key] >= prior.low[1][key]).all() and (moved[0.3][key] <= prior.high[1][key]).all()
    shift = {s: np.abs(m["radius"] - population["radius"]).mean() for s, m in moved.items()}
    assert shift[0.02] < shift[0.3]
    assert (moved[0.3]["malignant"] == population["malignant"]).all()


def test_under_appearance_offspring_keep_the_winners_appearance_and_draw_their_morphology_from_the_prior():
    prior = cand.CandidatePrior.measured(seed=0)
    rng = np.random.default_rng(1)
    population = prior.draw(1, 16, rng)
    weights = np.zeros(16)
    weights[3] = 1.0  # one winner
    children = {vary: offspring(prior, population, 1, weights, 300, step=0.01, redrawn=cand.FROM_PRIOR[vary], rng=rng)
                for vary in ("all", "appearance")}
    fresh = prior.draw(1, 300, rng)
    for vary, child in children.items():  # appearance follows the winner either way
        assert np.abs(child["radius"] - population["radius"][3]).max() < 0.01
    for key in ("n_spic", "edge", "aspect"):  # morphology: collapsed on the winner's, or spread as the prior's
        assert children["all"][key].std() < 0.1 * fresh[key].std()
        assert children["appearance"][key].std() == pytest.approx(fresh[key].std(), rel=0.3)
    assert (children["appearance"]["malignant"] == 1).all()


# ---------------------------------------------------------------- a run


def test_the_record_states_the_accountants_epsilon_of_its_stage(evolved):
    record = rundir.read_record(evolved)
    assert record.private and record.unit == "patient"
    # every image of a patient votes: the record says so, not DP-SGD's per-step cap
    assert VOTE_CONTRIBUTION in record.protects and "per step" not in record.protects
    (stage,) = record.stages
    assert (stage.stage, stage.sample_rate, stage.steps) == (STAGE, 1.0, SMALL["rounds"])
    mechanism = Mechanism(stage.stage, stage.noise_multiplier, stage.sample_rate, stage.steps)
    assert record.epsilon == pytest.approx(epsilon_for([mechanism], delta=record.delta))
    assert record.epsilon <= 5.0 + 1e-6
    manifest = pd.read_csv(evolved / MANIFEST)
    assert len(manifest) == SMALL["n"] and manifest["synthetic"].all()
    assert set(manifest.columns) >= {"path", "label", "class", "synthetic", "generator", "generator_sha256", "seed"}
    assert all((evolved / p).is_file() for p in manifest["path"])
    assert (evolved / "preview.png").is_file() and len(np.load(evolved / POPULATION)["radius"]) == SMALL["n"]


def test_two_runs_with_one_seed_release_different_noisy_votes(phantom_root, evolved, tmp_path):
    again = evolve(evolve_config(phantom_root, tmp_path / "again"))
    first, second = (pd.read_csv(f / rundir.HISTORY) for f in (evolved, again))
    assert not np.allclose(first["noisy_votes_0"], second["noisy_votes_0"])


def test_the_population_moves_toward_large_bright_private_masses(large_bright_root, tmp_path):
    out = evolve(evolve_config(large_bright_root, tmp_path / "e", epsilon=50.0, rounds=4, population=16, n=200))
    prior = prior_means(seed=0)
    evolved = np.load(out / POPULATION)
    # size is what the vote sees: +.04 to +.08 over 6 runs. Not contrast: the vote's feature space z-scores each
    # image's grey levels, and its gain went from -.02 to +.08 over the same runs, so it is not asserted
    assert evolved["radius"].mean() > prior["radius"] + 0.02


def test_evolving_the_appearance_only_keeps_the_priors_class_conditional_morphology(large_bright_root, tmp_path):
    out = evolve(evolve_config(large_bright_root, tmp_path / "e", epsilon=50.0, rounds=4, population=16, n=400,
                               vary="appearance"))
    evolved = np.load(out / POPULATION)
    prior = prior_means(seed=0)
    assert evolved["radius"].mean() > prior["radius"] + 0.02  # appearance moves as with --vary all
    draws = cand.CandidatePrior.measured(seed=0)
    rng = np.random.default_rng(5)
    for cls in (0, 1):
        mine, theirs = {k: v[evolved["label"] == cls] for k, v in evolved.items()}, draws.draw(cls, 2000, rng)
        for key in ("n_spic", "edge", "aspect", "spic_rel"):  # each class's morphology: the prior's
            assert mine[key].min() >= theirs[key].min() - 0.05 * np.ptp(theirs[key])
            assert mine[key].max() <= theirs[key].max() + 0.05 * np.ptp(theirs[key])
            se = theirs[key].std() / np.sqrt(len(mine[key]))
            assert abs(mine[key].mean() - theirs[key].mean()) < 4 * se + 1e-9, key
        assert len(np.unique(mine["aspect"])) > 0.9 * len(mine["aspect"])  # one prior draw each, no collapse
    spicules = [evolved["n_spic"][evolved["label"] == c].mean() for c in (0, 1)]
    assert spicules[0] == 0 and spicules[1] > 2  # malignant masses keep their spicules, benign have none


def test_vary_must_name_a_known_choice():
    from privmed.cli.synth import EVOLVE_VARY, EVOLVE_VARY_CHOICES
    from privmed.synth.config import EvolutionConfig

    assert EVOLVE_VARY_CHOICES == tuple(cand.FROM_PRIOR) and EVOLVE_VARY == EvolutionConfig.vary
    with pytest.raises(PrivmedError, match="evolve.vary"):
        evolve_config_from_dict({"privacy": {"epsilon": 1.0}, "evolve": {"vary": "shape"}})


def test_a_classifier_on_evolved_images_composes_the_evolutions_epsilon(phantom_root, evolved, tmp_path):
    config = config_from_dict({"out": str(tmp_path / "r"), "data": {"path": str(phantom_root), "image_size": 32},
                               "model": {"name": "scatter_linear"}, "privacy": {"epsilon": 2.0},
                               "synthetic": {"path": str(evolved), "use": "pretrain", "pretrain_epochs": 1},
                               "training": {"epochs": 1, "batch_size": 32, "bootstrap_resamples": 100}})
    record = rundir.read_record(train(config))
    assert record.private and [s.stage for s in record.stages] == [STAGE, "dp_sgd"]
    mechs = [Mechanism(s.stage, s.noise_multiplier, s.sample_rate, s.steps) for s in record.stages]
    assert record.epsilon == pytest.approx(epsilon_for(mechs, delta=record.delta))
    assert record.epsilon > max(s.epsilon_alone for s in record.stages)


# ---------------------------------------------------------------- the command


def test_the_command_writes_a_folder_and_says_its_privacy(phantom_root, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["synth", "evolve", "--data", str(phantom_root), "--image-size", "32", "--epsilon", "4",
                 "--rounds", "2", "--population", "8", "--n", "20", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "20 evolved phantom images" in printed and "private_evolution alone" in printed
    assert rundir.read_record(out).epsilon <= 4.0 + 1e-6


@pytest.mark.parametrize("options, message", [
    (["--data", "no/such/folder", "--epsilon", "1"], "does not exist"),
    (["--epsilon", "0"], "must be > 0"),
    (["--epsilon", "1e-4"], EVOLVE_EPSILON_UNREACHABLE.split("{")[0]),
    ([], EVOLVE_NEEDS_EPSILON[:40]),
    (["--epsilon", "1", "--delta", "0.5"], "is not below 1/N"),
    (["--epsilon", "1", "--rounds", "0"], "evolve.rounds"),
])
def test_bad_input_is_one_clear_message_and_writes_nothing(phantom_root, tmp_path, capsys, options, message):
    out = tmp_path / "o"
    args = ["synth", "evolve", "--image-size", "32", "--out", str(out), *options]
    if "--data" not in options:
        args += ["--data", str(phantom_root)]
    assert main(args) != 0
    assert message in capsys.readouterr().err and not out.exists()


def test_a_non_empty_out_folder_is_refused(phantom_root, evolved):
    with pytest.raises(PrivmedError, match="not an empty folder"):
        evolve(evolve_config(phantom_root, evolved))


def test_evolved_images_cannot_be_declared_public_for_the_data_that_voted(phantom_root, evolved, tmp_path):
    config = config_from_dict({"out": str(tmp_path / "r"), "data": {"path": str(phantom_root), "image_size": 32},
                               "model": {"name": "scatter_linear"}, "privacy": {"epsilon": 2.0},
                               "synthetic": {"path": str(evolved), "use": "pretrain", "public": True},
                               "training": {"epochs": 1, "batch_size": 32}})
    with pytest.raises(PrivmedError, match="cannot be declared public"):
        train(config)


def test_synth_evaluate_measures_an_evolved_folder(phantom_root, evolved, capsys):
    assert main(["synth", "evaluate", str(evolved), "--data", str(phantom_root), "--image-size", "32",
                 "--bootstrap", "100", "--out", str(evolved.parent / "quality")]) == 0
    assert "train on synthetic, test on real: AUROC" in capsys.readouterr().out


def test_the_commands_help_states_the_configs_defaults(capsys):
    from privmed.synth.config import EvolutionConfig

    with pytest.raises(SystemExit):
        main(["synth", "evolve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    d = EvolutionConfig()
    for shown in (f"(default {d.rounds})", f"(default {d.population})", f"(default {d.n})",
                  f"(default {d.threshold:g})", f"(default {d.step:g};", f"(default {d.fresh:g})",
                  f"(default {d.vary})"):
        assert shown in text


def test_the_feature_space_is_fixed_and_compares_large_images_at_its_own_size():
    from privmed.synth.evolve import FEATURE_SIZE, feature_space, features

    big = np.random.default_rng(0).random((2, 2 * FEATURE_SIZE, 2 * FEATURE_SIZE)).astype(np.float32)
    small = big.reshape(2, FEATURE_SIZE, 2, FEATURE_SIZE, 2).mean(axis=(2, 4))
    a = features(feature_space(2 * FEATURE_SIZE), big)
    assert torch.allclose(a, features(feature_space(FEATURE_SIZE), small), atol=1e-4)
    assert not any(True for _ in feature_space(FEATURE_SIZE).parameters())  # nothing to fit, nothing fitted
    rotated = features(feature_space(FEATURE_SIZE), np.rot90(small, 1, axes=(1, 2)).copy())
    assert torch.allclose(rotated, features(feature_space(FEATURE_SIZE), small), atol=1e-4)
