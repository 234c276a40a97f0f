"""The command line as a user runs it: train, evaluate, compare; errors as one line, nothing half-written."""

import json

import pytest
import torch

from privmed import rundir
from privmed.cli import main

FAST = ["--image-size", "32", "--model", "resnet9_small", "--epochs", "1", "--batch-size", "32",
        "--bootstrap", "100", "--augment", "false"]


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clean_error(code, err, pattern, out_dir=None):
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("privmed: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert pattern in lines[0], lines[0]
    if out_dir is not None:
        assert not out_dir.exists(), "a failed run must not leave a run directory behind"


@pytest.mark.slow
def test_train_evaluate_compare(phantom_root, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    code, out, _ = run_cli(capsys, "train", "--data", phantom_root, "--out", a, "--epsilon", 4, *FAST)
    assert code == 0 and "epsilon=" in out and "auroc=" in out
    code, out, _ = run_cli(capsys, "train", "--data", phantom_root, "--out", b, *FAST)
    assert code == 0 and "NOT PRIVATE" in out
    code, out, _ = run_cli(capsys, "evaluate", a, "--data", phantom_root, "--split", "test", "--bootstrap", 100)
    assert code == 0 and "auroc=" in out
    written = json.loads((a / "evaluations" / phantom_root.name / "test" / rundir.METRICS).read_text())
    run_metrics = json.loads((a / rundir.METRICS).read_text())
    # same data, same split, same thresholds: the external evaluation reproduces the run's own test AUROC
    assert written["splits"]["test"]["auroc"]["value"] == pytest.approx(run_metrics["splits"]["test"]["auroc"]["value"],
                                                                        abs=1e-6)
    code, out, _ = run_cli(capsys, "compare", a, b, "--data", phantom_root, "--bootstrap", 100)
    assert code == 0 and "p=" in out
    assert f"A = {a}: private: (epsilon=" in out and f"B = {b}: NOT PRIVATE:" in out  # which run is private


def test_a_run_whose_relative_data_path_does_not_resolve_from_here_asks_for_data(phantom_root, tmp_path, capsys,
                                                                                 monkeypatch):
    monkeypatch.chdir(phantom_root.parent)
    run = tmp_path / "rel"
    code, _, _ = run_cli(capsys, "train", "--data", phantom_root.name, "--out", run, *FAST)
    assert code == 0
    monkeypatch.chdir(tmp_path)
    for command in (["evaluate", run], ["compare", run, run], ["audit", run]):
        code, _, err = run_cli(capsys, *command)
        assert_clean_error(code, err, f"recorded its data as '{phantom_root.name}'")
        assert "Pass --data" in err
    code, out, _ = run_cli(capsys, "evaluate", run, "--data", phantom_root, "--bootstrap", 100)
    assert code == 0 and "auroc=" in out


def test_yaml_config_and_unknown_keys(phantom_root, tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"data: {{path: {phantom_root}, image_size: 32}}\ntraining: {{epochs: 1, bogus: 3}}\n")
    code, _, err = run_cli(capsys, "train", "--config", cfg, "--out", tmp_path / "y")
    assert_clean_error(code, err, "unknown training key(s) ['bogus']", tmp_path / "y")


@pytest.mark.parametrize("args,pattern", [
    (["--delta", "0.5"], "not below 1/N"),
    (["--epsilon", "0"], "must be > 0"),
    (["--epsilon", "-1"], "must be > 0"),
    (["--epsilon", "0.001", "--epochs", "50"], "cannot be reached"),
    (["--data", "/definitely/not/here"], "does not exist"),
])
def test_bad_options_fail_cleanly(phantom_root, tmp_path, capsys, args, pattern):
    out = tmp_path / "bad"
    base = ["train", "--data", phantom_root, "--out", out, *FAST]
    code, _, err = run_cli(capsys, *base, *(["--epsilon", "1"] if "--epsilon" not in args and "--delta" in args else []),
                           *args)
    assert_clean_error(code, err, pattern, out)


@pytest.mark.parametrize("rank,prints", [("0", True), ("1", False)])
def test_under_torchrun_only_rank_0_prints_a_user_error(tmp_path, capsys, monkeypatch, rank, prints):
    # every rank runs the same command on the same inputs: one line, not one per process
    monkeypatch.setenv("RANK", rank)
    code, _, err = run_cli(capsys, "train", "--data", tmp_path / "absent", "--out", tmp_path / "o", *FAST)
    assert code == 2
    assert ("does not exist" in err) is prints and "Traceback" not in err


def test_batch_that_does_not_fit_in_memory(phantom_root, tmp_path, capsys, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(torch.Tensor, "backward", out_of_memory)
    code, _, err = run_cli(capsys, "train", "--data", phantom_root, "--out", tmp_path / "oom", *FAST,
                           "--physical-batch-size", "64")
    assert_clean_error(code, err, "--physical-batch-size, e.g. 16", tmp_path / "oom")


def test_resume_with_nothing_to_resume(phantom_root, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--data", phantom_root, "--out", tmp_path / "none", *FAST, "--resume")
    assert_clean_error(code, err, "holds no run to resume")


def test_help_shows_the_defaults(capsys):
    from privmed.config import DataConfig, ModelConfig, TrainingConfig

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    t, d, m = TrainingConfig(), DataConfig(), ModelConfig()
    for option, default in (("--epochs EPOCHS", t.epochs), ("--image-size IMAGE_SIZE", d.image_size),
                            ("--lr LR", t.lr), ("--seed SEED", t.seed), ("--model MODEL", m.name)):
        after = text.split(option + " ", 2)[-1][:120]  # the option's own help, past the usage line
        assert f"default {default}" in after, (option, after)
    assert f"(default {t.batch_size})" in text


def test_a_wrong_model_or_dimension_fails_before_any_data_is_read(tmp_path, capsys):
    missing = tmp_path / "not-read"  # the data is checked after the model: it must not be what fails
    code, _, err = run_cli(capsys, "train", "--data", missing, "--out", tmp_path / "o", "--model", "scatter_linear",
                           "--spatial-dims", "3")
    assert_clean_error(code, err, "model 'scatter_linear' supports spatial_dims (2,), got 3", tmp_path / "o")
    code, _, err = run_cli(capsys, "train", "--data", missing, "--out", tmp_path / "o", "--model", "resnet99")
    assert_clean_error(code, err, "unknown model 'resnet99'", tmp_path / "o")


def test_tiny_splits_get_a_warning_under_their_metrics():
    import numpy as np
    import pandas as pd

    from privmed.data.sources import Dataset
    from privmed.evaluation.predictions import evaluate_predictions
    from privmed.reporting import MIN_PER_CLASS, metrics_table

    n_small, n_big = 3, 4 * MIN_PER_CLASS
    split = ["val"] * n_big + ["test"] * 2 * n_small
    y = [i % 2 for i in range(n_big)] + [0] * n_small + [1] * n_small
    table = pd.DataFrame({"sample_id": [str(i) for i in range(len(y))], "split": split, "patient_id": np.nan,
                          "label=1": y})
    data = Dataset("toy", table, np.zeros((len(y), 4, 4), np.float32), ("label=1",), ())
    scores = np.random.default_rng(0).random((len(y), 1))
    metrics = evaluate_predictions(data, {"val": scores[:n_big], "test": scores[n_big:]}, n_resamples=100)
    assert metrics["splits"]["test"]["smallest_class_n"] == n_small
    out = "\n".join(metrics_table(metrics, title="toy"))
    assert f"split 'test' has only {n_small} sample(s) of its rarest class" in out
    assert "split 'val' has only" not in out


def test_positive_class_0_makes_label_0_positive_end_to_end(tmp_path, capsys):
    """A BreastMNIST-like .npz where label 0 is malignant: targets, scores and names follow --positive-class."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 64), ("val", 32), ("test", 32)):
        labels = np.arange(n) % 2
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        images[labels == 0, 8:20, 8:20] = 220  # label 0 carries the lesion
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels.reshape(n, 1)
    np.savez(tmp_path / "breast.npz", **arrays)
    out = tmp_path / "run"
    code, printed, _ = run_cli(capsys, "train", "--data", tmp_path / "breast.npz", "--out", out, *FAST,
                               "--positive-class", "0", "--class-names", "malignant,benign")
    assert code == 0 and "    malignant: auroc=" in printed and "label=1" not in printed
    assert json.loads((out / rundir.METRICS).read_text())["label_names"] == ["malignant"]
    preds = pd.read_csv(out / rundir.PREDICTIONS)
    test = preds[preds["split"] == "test"]
    assert (test["label"].to_numpy() == (arrays["test_labels"].ravel() == 0)).all()
    assert test.loc[test["label"] == 1, "score"].mean() > test.loc[test["label"] == 0, "score"].mean()


def test_options_named_without_importing_torch_agree_with_the_generator_config():
    """``synth train`` names the discriminators, its default folder and width itself (importing the generator's
    config would load torch for ``privmed --help``): they must stay the config's."""
    from privmed.cli.synth import DISCRIMINATOR_CHOICES, GAN_WIDTH, GENERATOR_OUT
    from privmed.synth.config import GanConfig, GeneratorConfig
    from privmed.synth.gan import DISCRIMINATORS

    assert DISCRIMINATOR_CHOICES == tuple(DISCRIMINATORS) and DISCRIMINATOR_CHOICES[0] == GanConfig.discriminator
    assert GENERATOR_OUT == GeneratorConfig.out and GAN_WIDTH == GanConfig.width


def test_train_reads_the_data_once(phantom_root, tmp_path, capsys, monkeypatch):
    """The checks before training and the run share one read of the data (a large data set is decoded once)."""
    from privmed.data import sources
    from privmed.training import trainer

    reads = []
    real = sources.load_dataset

    def counted(config, **kw):
        reads.append(config.path)
        return real(config, **kw)

    monkeypatch.setattr(sources, "load_dataset", counted)  # what the checks import
    monkeypatch.setattr(trainer, "load_dataset", counted)  # what the trainer imported
    code, _, err = run_cli(capsys, "train", "--data", phantom_root, "--out", tmp_path / "once", "--epsilon", 4, *FAST)
    assert code == 0, err
    assert reads == [str(phantom_root)]
