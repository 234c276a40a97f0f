"""Synthetic data: the generator, sampling, quality measures, and one composed privacy ledger."""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from privmed import rundir, seal
from privmed.config import DataConfig, config_from_dict
from privmed.data.sources import load_dataset
from privmed.errors import PrivmedError
from privmed.privacy.accounting import Mechanism, epsilon_for
from privmed.synth.config import MINIBATCH_STD_PRIVATE, generator_config_from_dict
from privmed.synth.gan import Discriminator, Generator, ScatterDiscriminator
from privmed.synth.quality import MIN_PER_CLASS, diversity, evaluate_synthetic, frechet_distance
from privmed.synth.sample import sample, synthetic_images
from privmed.synth.training import STAGE, train_generator
from privmed.training.synthetic import NON_PRIVATE_GENERATOR, UNKNOWN_ORIGIN, prepare_finetune
from privmed.training.trainer import train


def gen_config(root, out, **privacy):
    return generator_config_from_dict({"out": str(out), "data": {"path": str(root), "image_size": 32},
                                       "privacy": privacy, "gan": {"epochs": 2, "batch_size": 32, "width": 8,
                                                                   "grid_every": 1, "seed": 2}})


@pytest.fixture(scope="module")
def dp_generator(phantom_root, tmp_path_factory):
    return train_generator(gen_config(phantom_root, tmp_path_factory.mktemp("gen") / "g", epsilon=5.0))


@pytest.fixture(scope="module")
def dp_samples(dp_generator, tmp_path_factory):
    return sample(dp_generator, n=60, out=tmp_path_factory.mktemp("syn") / "s", seed=0)


def classifier_config(root, out, synthetic=None, use="pretrain", **privacy):
    raw = {"out": str(out), "data": {"path": str(root), "image_size": 32}, "model": {"name": "scatter_linear"},
           "privacy": privacy, "training": {"epochs": 2, "batch_size": 32, "bootstrap_resamples": 100}}
    if synthetic is not None:
        raw["synthetic"] = {"path": str(synthetic), "use": use, "pretrain_epochs": 2}
    return config_from_dict(raw)


# ---------------------------------------------------------------- networks


@pytest.mark.parametrize("size", [64, 128])
def test_networks_make_and_judge_images_of_the_configured_size(size):
    gen, disc = Generator(image_size=size, width=8), Discriminator(image_size=size, width=8)
    z, labels = torch.randn(4, 100), torch.tensor([0, 1, 0, 1])
    images = gen.eval()(z, labels)
    assert images.shape == (4, 1, size, size) and images.abs().max() <= 1
    assert disc(images, labels).shape == (4,)
    same_z = gen(z[:1].repeat(2, 1), torch.tensor([0, 1]))
    assert not torch.allclose(same_z[0], same_z[1])  # the label conditions the image


def test_scatter_discriminator_is_small_and_conditioned():
    disc = ScatterDiscriminator(image_size=64)
    assert sum(p.numel() for p in disc.parameters()) < 20_000
    assert not any(p.requires_grad for p in disc.features.parameters())
    nn.init.normal_(disc.class_projection.weight)
    images = torch.rand(2, 1, 64, 64)
    same = disc(images[:1].repeat(2, 1, 1, 1), torch.tensor([0, 1]))
    assert same.shape == (2,) and same[0] != same[1]


def train_patients(root) -> int:
    """Patients of the phantom's training split: the units DP-SGD samples (one image of each per step)."""
    table = pd.read_csv(root / "metadata.csv")
    return int(table.loc[table["split"] == "train", "patient_id"].nunique())


@pytest.mark.slow
def test_dp_generator_with_scatter_discriminator_trains_and_is_accounted(phantom_root, tmp_path):
    config = generator_config_from_dict({"out": str(tmp_path / "g"), "data": {"path": str(phantom_root),
                                                                             "image_size": 32},
                                         "privacy": {"epsilon": 3.0},
                                         "gan": {"epochs": 1, "batch_size": 32, "width": 8, "discriminator": "scatter"}})
    record = rundir.read_json(train_generator(config) / rundir.PRIVACY)
    assert record["private"] and record["epsilon"] <= 3.0
    assert record["stages"][0]["steps"] == math.ceil(train_patients(phantom_root) / 32)  # patients, one image each


@pytest.mark.slow
def test_dp_generator_with_diff_augment_trains_and_is_accounted_as_without(phantom_root, tmp_path):
    raw = {"data": {"path": str(phantom_root), "image_size": 32}, "privacy": {"epsilon": 3.0},
           "gan": {"epochs": 1, "batch_size": 32, "width": 8, "diff_augment": True}}
    record = rundir.read_json(train_generator(generator_config_from_dict({**raw, "out": str(tmp_path / "g")}))
                              / rundir.PRIVACY)
    assert record["private"] and record["epsilon"] <= 3.0
    assert record["stages"][0]["steps"] == math.ceil(train_patients(phantom_root) / 32)


def test_minibatch_std_makes_each_judgement_depend_on_the_batch_and_is_off_by_default():
    images, labels = torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 0, 1])
    other = torch.cat([images[:1], torch.rand(3, 1, 32, 32)])
    for minibatch_std in (False, True):
        torch.manual_seed(0)
        disc = Discriminator(image_size=32, width=8, minibatch_std=minibatch_std)
        nn.init.normal_(disc.out.weight)
        first, first_in_other_batch = disc(images, labels)[0], disc(other, labels)[0]
        assert torch.isclose(first, first_in_other_batch).item() is not minibatch_std


def test_minibatch_std_with_dp_is_refused_with_the_reason(phantom_root, tmp_path):
    raw = {"out": str(tmp_path / "g"), "data": {"path": str(phantom_root)}, "privacy": {"epsilon": 5.0},
           "gan": {"minibatch_std": True}}
    with pytest.raises(PrivmedError) as err:
        generator_config_from_dict(raw)
    assert str(err.value) == MINIBATCH_STD_PRIVATE
    raw["privacy"] = {}
    assert generator_config_from_dict(raw).gan.minibatch_std


def test_a_replayable_generator_shows_no_epsilon_per_epoch(phantom_root, tmp_path):
    """Issue 32: replayable noise makes the generator NOT PRIVATE; its history.csv and train.log once showed
    an epsilon as if private."""
    from privmed.privacy.ledger import NOT_PRIVATE_EPSILON

    out = train_generator(gen_config(phantom_root, tmp_path / "g", epsilon=5.0, replayable_noise=True))
    assert rundir.read_record(out).private is False
    assert set(pd.read_csv(out / rundir.HISTORY)["epsilon"]) == {NOT_PRIVATE_EPSILON}
    assert f"epsilon={NOT_PRIVATE_EPSILON}" in (out / rundir.LOG).read_text()


@pytest.mark.slow
def test_non_private_generator_with_minibatch_std_trains_and_says_it_is_not_private(phantom_root, tmp_path):
    config = generator_config_from_dict({"out": str(tmp_path / "g"), "data": {"path": str(phantom_root),
                                                                             "image_size": 32},
                                         "gan": {"epochs": 1, "batch_size": 32, "width": 8, "minibatch_std": True}})
    out = train_generator(config)
    record = rundir.read_json(out / rundir.PRIVACY)
    assert record["private"] is False and "without DP" in record["non_private_reasons"][0]
    assert np.isfinite(pd.read_csv(out / rundir.HISTORY)["loss_d"]).all()


def test_discriminator_has_no_batch_norm():
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in Discriminator(image_size=64).modules())


def test_unsupported_size_is_a_clear_error():
    with pytest.raises(PrivmedError, match="power of two"):
        Generator(image_size=48)


# ---------------------------------------------------------------- DP generator training


@pytest.mark.slow
def test_dp_generator_epsilon_is_the_accountants_and_within_target(dp_generator, phantom_root):
    record = rundir.read_json(dp_generator / rundir.PRIVACY)
    assert record["private"] is True and record["unit"] == "patient"
    (stage,) = record["stages"]
    assert stage["stage"] == STAGE and stage["steps"] == 2 * math.ceil(train_patients(phantom_root) / 32)
    mech = Mechanism(stage["stage"], stage["noise_multiplier"], stage["sample_rate"], stage["steps"])
    assert record["epsilon"] == pytest.approx(epsilon_for([mech], delta=record["delta"]), rel=1e-9)
    assert 4.8 < record["epsilon"] <= 5.0
    assert (dp_generator / "grids" / "epoch_0002.png").is_file()


@pytest.mark.slow
def test_interrupted_generator_resumes_without_resetting_its_spend(phantom_root, tmp_path, dp_generator):
    out = tmp_path / "g"

    def stop(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_generator(gen_config(phantom_root, out, epsilon=5.0), on_epoch_end=stop)
    assert len(pd.read_csv(out / rundir.HISTORY)) == 1
    train_generator(gen_config(phantom_root, out, epsilon=5.0), resume=True)
    resumed, whole = (rundir.read_json(p / rundir.PRIVACY) for p in (out, dp_generator))
    assert resumed["stages"][0]["steps"] == whole["stages"][0]["steps"]
    assert resumed["epsilon"] == pytest.approx(whole["epsilon"])


@pytest.mark.slow
def test_resume_with_a_changed_config_is_refused(phantom_root, dp_generator):
    changed = gen_config(phantom_root, dp_generator, epsilon=2.0)
    with pytest.raises(PrivmedError, match="configuration changed"):
        train_generator(changed, resume=True)


@pytest.mark.slow
def test_a_generator_needs_only_a_training_split(phantom_root, tmp_path):
    table = pd.read_csv(phantom_root / "metadata.csv")
    train_rows = table[table["split"] == "train"].assign(path=lambda t: [str(phantom_root / p) for p in t["path"]])
    (tmp_path / "train_only").mkdir()
    train_rows.to_csv(tmp_path / "train_only" / "metadata.csv", index=False)
    config = gen_config(tmp_path / "train_only", tmp_path / "g", epsilon=5.0)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, allow_outside_root=True))
    out = train_generator(config)
    stage = rundir.read_json(out / rundir.PRIVACY)["stages"][0]
    assert stage["sample_rate"] == pytest.approx(1 / math.ceil(train_rows["patient_id"].nunique() / 32))


def test_generator_delta_must_be_below_one_over_n(phantom_root, tmp_path):
    with pytest.raises(PrivmedError, match="1/N"):
        train_generator(gen_config(phantom_root, tmp_path / "g", epsilon=5.0, delta=0.5))
    assert not (tmp_path / "g").exists()  # nothing written


# ---------------------------------------------------------------- sampling


@pytest.mark.slow
def test_sample_writes_classes_manifest_and_privacy_record(dp_generator, dp_samples):
    manifest = pd.read_csv(dp_samples / "manifest.csv")
    assert len(manifest) == 60 and manifest["synthetic"].all()
    assert manifest["label"].value_counts().to_dict() == {0: 30, 1: 30}
    assert all((dp_samples / p).is_file() for p in manifest["path"])
    copied = rundir.read_json(dp_samples / "privacy.json")
    upstream = copied.pop("upstream")  # the generator's record, named by path, digest and seal
    assert copied == rundir.read_json(dp_generator / rundir.PRIVACY)
    assert upstream == [f"{(dp_generator / rundir.PRIVACY).resolve()} sha256 "
                        f"{seal.file_digest(dp_generator / rundir.PRIVACY)} (seal verified)"]


@pytest.mark.slow
def test_sampling_is_deterministic_for_a_seed(dp_generator, tmp_path):
    def digest(folder):
        return hashlib.sha256(b"".join((folder / p).read_bytes()
                                       for p in pd.read_csv(folder / "manifest.csv")["path"])).hexdigest()

    a, b = (sample(dp_generator, n=20, out=tmp_path / k, seed=5) for k in "ab")
    c = sample(dp_generator, n=20, out=tmp_path / "c", seed=6)
    assert digest(a) == digest(b) != digest(c)


# ---------------------------------------------------------------- one ledger per run


@pytest.mark.slow
def test_pretrain_finetune_composes_generator_and_classifier_through_the_accountant(phantom_root, dp_samples,
                                                                                   tmp_path):
    out = train(classifier_config(phantom_root, tmp_path / "r", dp_samples, epsilon=2.0))
    record = rundir.read_json(out / rundir.PRIVACY)
    assert record["private"] is True
    names = [s["stage"] for s in record["stages"]]
    assert names == [STAGE, "dp_sgd"]  # centring came from synthetic features: no private stage
    mechs = [Mechanism(s["stage"], s["noise_multiplier"], s["sample_rate"], s["steps"]) for s in record["stages"]]
    composed = epsilon_for(mechs, delta=record["delta"])
    assert record["epsilon"] == pytest.approx(composed, rel=1e-9)
    alone = [s["epsilon_alone"] for s in record["stages"]]
    assert max(alone) < composed < sum(alone)  # composition, not addition
    assert alone[1] <= 2.0 + 1e-6


@pytest.mark.slow
def test_augment_samples_real_and_synthetic_as_one_set(phantom_root, dp_samples, tmp_path):
    out = train(classifier_config(phantom_root, tmp_path / "r", dp_samples, use="augment", epsilon=2.0))
    sgd = next(s for s in rundir.read_json(out / rundir.PRIVACY)["stages"] if s["stage"] == "dp_sgd")
    # the sampled units: every private patient (one image each) and every synthetic image
    assert sgd["sample_rate"] == pytest.approx(1 / math.ceil((train_patients(phantom_root) + 60) / 32))


@pytest.mark.slow
def test_synthetic_only_costs_the_generators_epsilon(phantom_root, dp_generator, dp_samples, tmp_path):
    out = train(classifier_config(phantom_root, tmp_path / "r", dp_samples, use="only"))
    record = rundir.read_json(out / rundir.PRIVACY)
    assert record["private"] is True
    assert record["epsilon"] == pytest.approx(rundir.read_json(dp_generator / rundir.PRIVACY)["epsilon"])


@pytest.mark.slow
def test_synthetic_only_with_an_epsilon_is_a_clear_error(phantom_root, dp_samples, tmp_path):
    with pytest.raises(PrivmedError, match="leave out --epsilon"):
        classifier_config(phantom_root, tmp_path / "r", dp_samples, use="only", epsilon=1.0)


def test_a_missing_synthetic_folder_fails_before_any_model_is_built(phantom_root, tmp_path, monkeypatch):
    def build_for_run(*args, **kwargs):
        raise AssertionError("the synthetic folder should be checked before the model is built")
    monkeypatch.setattr("privmed.training.trainer.build_for_run", build_for_run)
    with pytest.raises(PrivmedError, match="synthetic data folder .* does not exist"):
        train(classifier_config(phantom_root, tmp_path / "r", tmp_path / "nope", epsilon=2.0))
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_images_of_unknown_origin_make_the_run_not_private(phantom_root, tmp_path):
    folder = tmp_path / "unknown"
    for cls in ("benign", "malignant"):
        (folder / cls).mkdir(parents=True)
        for src in sorted((phantom_root / "images" / "train" / cls).glob("*.png"))[:10]:
            (folder / cls / src.name).write_bytes(src.read_bytes())
    out = train(classifier_config(phantom_root, tmp_path / "r", folder, epsilon=2.0))
    record = rundir.read_json(out / rundir.PRIVACY)
    assert record["private"] is False and record["epsilon"] == "inf"
    assert record["non_private_reasons"] == [UNKNOWN_ORIGIN.format(path=folder)]
    assert "NOT PRIVATE" in record["summary"]


@pytest.mark.slow
def test_phantom_images_are_made_without_patient_data_and_cost_nothing(phantom_root, tmp_path):
    from privmed.data.phantom import PhantomSpec, write_phantom_dataset

    phantom = write_phantom_dataset(tmp_path / "phantom", PhantomSpec(n_samples=60, image_size=32, seed=9)).parent
    out = train(classifier_config(phantom_root, tmp_path / "r", phantom, epsilon=2.0))
    record = rundir.read_json(out / rundir.PRIVACY)
    assert record["private"] is True
    assert [s["stage"] for s in record["stages"]] == ["dp_sgd"]  # no centring release: the phantom's mean is used
    sgd = record["stages"][0]
    assert record["epsilon"] == pytest.approx(epsilon_for(
        [Mechanism("dp_sgd", sgd["noise_multiplier"], sgd["sample_rate"], sgd["steps"])], delta=record["delta"]))
    assert record["epsilon"] <= 2.0 + 1e-6
    assert len(record["free_inputs"]) == 1 and "privmed phantom" in record["free_inputs"][0]
    assert "cost no privacy" in record["summary"]


@pytest.mark.slow
def test_a_non_private_generator_makes_the_run_not_private(phantom_root, tmp_path):
    gen = train_generator(gen_config(phantom_root, tmp_path / "g"))
    syn = sample(gen, n=20, out=tmp_path / "s")
    out = train(classifier_config(phantom_root, tmp_path / "r", syn, epsilon=2.0))
    record = rundir.read_json(out / rundir.PRIVACY)
    assert record["private"] is False
    assert record["non_private_reasons"][0] == NON_PRIVATE_GENERATOR.format(path=syn, generator=str(gen.resolve()))


# ---------------------------------------------------------------- fine-tuning modes


def test_finetune_head_freezes_all_but_the_last_linear_layer_and_reinit_resets_it():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    before = net[2].weight.detach().clone()
    prepare_finetune(net, finetune="head", reinit_head=True)
    assert [p.requires_grad for p in net.parameters()] == [False, False, True, True]
    assert not torch.equal(before, net[2].weight)


# ---------------------------------------------------------------- quality


def test_frechet_distance_matches_the_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-8)
    shifted = a + np.array([2.0, 0, 0])  # same covariance: FD = |mean shift|^2
    assert frechet_distance(a, shifted) == pytest.approx(4.0, rel=1e-6)
    scaled = a * 2  # N(0, I) vs N(0, 4I) in 3D: trace(I + 4I - 2*2I) = 3, up to sampling
    assert frechet_distance(a, scaled) == pytest.approx(3.0, rel=0.05)


def test_diversity_is_the_per_pixel_spread_across_each_class():
    images = np.zeros((4, 2, 2), np.float32)
    images[1] = 1.0  # class 0: one black, one white image -> std 0.5 at every pixel
    images[2:, 0, 0] = [0.2, 0.6]  # class 1: only pixel (0, 0) varies, std 0.2
    assert diversity(images, np.array([0, 0, 1, 1])) == pytest.approx((0.5, 0.2 / 4))


@pytest.mark.slow
# the "generator" here returns copies of its training images, so the Frechet distance's covariance product is
# singular on purpose; scipy says so, and the distance (its real part) is still what the test reads
@pytest.mark.filterwarnings("ignore:Matrix is singular:scipy.linalg.LinAlgWarning")
def test_quality_flags_a_generator_that_copies_its_training_images(phantom_root, tmp_path):
    from privmed.config import DataConfig
    from privmed.data.sources import load_dataset

    real = load_dataset(DataConfig(path=str(phantom_root), image_size=32))
    train_split = real.split("train")
    copies = evaluate_synthetic(synthetic=train_split.images, labels=train_split.labels[:, 0].astype(int),
                                real=real, out=tmp_path / "q", n_resamples=100)
    assert copies.near_copy_share == 1.0 and copies.median_nn_distance_synthetic == pytest.approx(0, abs=1e-6)
    noise = np.random.default_rng(0).random(train_split.images.shape).astype(np.float32)
    honest = evaluate_synthetic(synthetic=noise, labels=train_split.labels[:, 0].astype(int), real=real,
                                out=tmp_path / "n", n_resamples=100)
    assert honest.near_copy_share == 0.0
    assert honest.frechet_distance > copies.frechet_distance
    assert copies.diversity == pytest.approx(copies.diversity_real)  # the training images themselves
    one_image = np.repeat(train_split.images[:1], len(train_split), axis=0)
    collapsed = evaluate_synthetic(synthetic=one_image, labels=train_split.labels[:, 0].astype(int), real=real,
                                   out=tmp_path / "c", n_resamples=100)
    assert collapsed.diversity == pytest.approx((0.0, 0.0), abs=1e-6) and min(collapsed.diversity_real) > 0.05
    for name in ("quality.json", "samples.png", "closest_pairs.png"):
        assert (tmp_path / "q" / name).is_file()


# ---------------------------------------------------------------- command line


@pytest.mark.slow
def test_synth_command_line_train_sample_evaluate_then_train_with_it(phantom_root, tmp_path, capsys):
    from privmed.cli import main

    gen, syn = tmp_path / "g", tmp_path / "s"
    assert main(["synth", "train", "--data", str(phantom_root), "--image-size", "32", "--epsilon", "8",
                 "--epochs", "1", "--batch-size", "32", "--width", "8", "--out", str(gen)]) == 0
    assert main(["synth", "sample", str(gen), "--n", "40", "--out", str(syn)]) == 0
    assert main(["synth", "evaluate", str(gen), "--data", str(phantom_root), "--n", "40", "--bootstrap", "100"]) == 0
    printed = capsys.readouterr().out
    assert "train on synthetic, test on real: AUROC" in printed and "real vs real" in printed
    assert (gen / "quality" / "quality.json").is_file()
    assert main(["train", "--data", str(phantom_root), "--image-size", "32", "--epsilon", "3", "--epochs", "1",
                 "--batch-size", "32", "--synthetic", str(syn), "--synthetic-use", "pretrain", "--finetune", "head", "--pretrain-epochs",
                 "1", "--bootstrap", "100", "--out", str(tmp_path / "r")]) == 0
    assert "generator_discriminator_dp_sgd alone" in capsys.readouterr().out


@pytest.mark.slow
def test_audit_synthetic_takes_a_generator_or_its_samples(phantom_root, dp_generator, dp_samples, capsys):
    from privmed.cli import main

    assert main(["audit-synthetic", str(dp_generator), "--data", str(phantom_root), "--n", "40",
                 "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "DCR membership test: 40 synthetic images vs" in out and "32 px" in out
    assert main(["audit-synthetic", str(dp_samples), "--data", str(phantom_root), "--image-size", "32",
                 "--bootstrap", "50"]) == 0
    assert "60 synthetic images" in capsys.readouterr().out


def test_synth_sample_of_a_folder_without_generator_is_a_clear_error(tmp_path, capsys):
    from privmed.cli import main

    assert main(["synth", "sample", str(tmp_path), "--n", "10", "--out", str(tmp_path / "s")]) == 2
    assert "synth train" in capsys.readouterr().err


@pytest.mark.slow
def test_samples_go_only_to_a_new_or_empty_folder_and_nothing_there_is_touched(dp_generator, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(PrivmedError, match="not an empty folder"):
        sample(dp_generator, n=10, out=tmp_path, seed=0)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    assert (sample(dp_generator, n=10, out=tmp_path / "empty", seed=0) / "manifest.csv").is_file()


@pytest.mark.slow
def test_measuring_too_few_synthetic_images_is_a_clear_error(phantom_root, dp_generator, tmp_path):
    with pytest.raises(PrivmedError, match="--n 1: drawing from a generator needs at least 2 images"):
        synthetic_images(dp_generator, n=1, image_size=None)
    images, labels, _, _ = synthetic_images(dp_generator, n=30, image_size=None)
    keep = np.r_[np.flatnonzero(labels == 0)[:15], np.flatnonzero(labels == 1)[:5]]
    real = load_dataset(DataConfig(path=str(phantom_root), image_size=32))
    with pytest.raises(PrivmedError, match=f"15 / 5 synthetic images of each class: .* at least {MIN_PER_CLASS}"):
        evaluate_synthetic(synthetic=images[keep], labels=labels[keep], real=real, out=tmp_path / "q")
    assert not (tmp_path / "q").exists()


@pytest.mark.slow
def test_interrupted_pretrain_finetune_run_resumes_to_the_same_model_and_ledger(phantom_root, dp_samples, tmp_path):
    whole = train(classifier_config(phantom_root, tmp_path / "whole", dp_samples, epsilon=2.0))

    def stop(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt

    config = classifier_config(phantom_root, tmp_path / "cut", dp_samples, epsilon=2.0)
    with pytest.raises(KeyboardInterrupt):
        train(config, on_epoch_end=stop)
    cut = train(config, resume=True)
    a, b = (rundir.read_json(p / rundir.PRIVACY) for p in (whole, cut))
    assert a["stages"] == b["stages"] and a["epsilon"] == b["epsilon"]
    # the same pretrained start and schedule; the fine-tuning after the cut drew fresh secret noise
    wa, wb = (torch.load(p / rundir.CHECKPOINTS / rundir.LAST, weights_only=False)["engine"]["module"] for p in (whole, cut))
    assert wa.keys() == wb.keys() and any(not torch.allclose(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_the_generator_bar_moves_inside_an_epoch(phantom_root, tmp_path, monkeypatch):
    """Progress is counted in discriminator steps, so a long epoch is not a frozen 0/3."""
    import privmed.synth.training as synth_training

    bars = []

    class Recorder:
        def __init__(self, *args, total=None, initial=0, **kwargs):
            self.total, self.n, self.epochs_seen = total, initial, []
            bars.append(self)

        def update(self, k=1):
            self.n += k

        def set_postfix(self, refresh=True, **values):
            self.epochs_seen.append((self.n, values.get("epoch")))

        def close(self):
            pass

    monkeypatch.setattr(synth_training, "progress", Recorder)
    train_generator(gen_config(phantom_root, tmp_path / "g", epsilon=5.0))
    steps = 2 * math.ceil(train_patients(phantom_root) / 32)
    [bar] = bars
    assert bar.total == steps and bar.n == steps
    inside_first_epoch = [n for n, epoch in bar.epochs_seen if epoch == "1/2"]
    assert 1 in inside_first_epoch and steps // 2 in inside_first_epoch  # it moved before the epoch ended
