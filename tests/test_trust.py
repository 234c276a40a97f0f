"""Issue 32, "nothing faked, nothing leaked": user files cannot override, run code, escape or leak.

Each test names a row of docs/bad-input.md ("Trust (issue 32)")."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from test_bad_input import FAST, NOISELESS, assert_refused, finished_run, run_cli, run_copy  # noqa: F401 (fixtures)

from privmed import rundir, safe_yaml
from privmed.errors import PrivmedError
from privmed.privacy.ledger import PrivacyLedger

# --------------------------------------------------------------------------- item 1: duplicate keys, aliases

#: nested aliases: 342 bytes that expand to 9**9 strings
BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]\n" for p, c in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("text, key, line", [
    ("privacy: {epsilon: 1}\ntraining: {epochs: 1}\nprivacy:\n  noise_multiplier: 0\n", "privacy", 3),
    ("privacy: {epsilon: 1, epsilon: .inf}\n", "epsilon", 1),
], ids=["a second section", "a key twice in a flow mapping"])
def test_a_duplicate_key_in_a_config_file_is_refused(tmp_path, capsys, text, key, line):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    code, _, err = run_cli(capsys, "train", "--config", config, "--out", tmp_path / "x", *FAST)
    assert_refused(code, err, f"'{config}' line {line}: the key '{key}' appears twice", tmp_path / "x")


def test_a_duplicate_key_in_a_study_file_is_refused(tmp_path, capsys):
    study = tmp_path / "study.yaml"
    rundir.write_yaml(study, NOISELESS)
    study.write_text(study.read_text() + "epsilons: [1.0]\n")
    code, _, err = run_cli(capsys, "study", study, "--out", tmp_path / "out")
    assert_refused(code, err, "the key 'epsilons' appears twice in one mapping", tmp_path / "out")


def test_nested_aliases_that_expand_without_bound_are_refused(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 500
    code, _, err = run_cli(capsys, "train", "--config", config, "--out", tmp_path / "x")
    assert_refused(code, err, "through its aliases", tmp_path / "x")
    with pytest.raises(PrivmedError, match="through its aliases"):
        safe_yaml.load("a: &a [*a]\n", "loop.yaml")


def test_merge_keys_and_modest_aliases_still_load():
    text = "base: &b {epsilon: 1, delta: 0.001}\nrun:\n  <<: *b\n  epsilon: 2\nlist: &l [1, 2]\nagain: *l\n"
    assert safe_yaml.load(text, "ok.yaml") == {"base": {"epsilon": 1, "delta": 0.001},
                                               "run": {"epsilon": 2, "delta": 0.001}, "list": [1, 2], "again": [1, 2]}


def test_a_duplicate_key_in_a_model_arg_is_refused():
    import argparse

    from privmed.model_options import parse_model_arg

    with pytest.raises(argparse.ArgumentTypeError, match="the key 'a' appears twice"):
        parse_model_arg("channels={a: 1, a: 2}")


# --------------------------------------------------------------------------- item 2: a checkpoint runs no code


class _Opens:
    """Unpickling this calls ``open(marker, "w")``: a crafted checkpoint that writes a file when loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def craft(path: Path, marker: Path, **plain) -> None:
    import torch

    torch.save({"model": {}, "epoch": 1, **plain, "payload": _Opens(marker)}, path)


def test_a_crafted_best_checkpoint_is_refused_and_runs_nothing(run_copy, phantom_root, tmp_path, capsys):
    code, _, err = run_cli(capsys, "evaluate", run_copy, "--data", phantom_root, "--bootstrap", 100)
    assert code == 0, err  # privmed's own checkpoint loads with weights_only=True
    marker = tmp_path / "ran"
    craft(run_copy / rundir.CHECKPOINTS / rundir.BEST, marker)
    code, _, err = run_cli(capsys, "evaluate", run_copy, "--data", phantom_root, "--bootstrap", 100)
    assert_refused(code, err, "holds a call to 'io.open', which no privmed checkpoint holds", marker)


def test_a_crafted_last_checkpoint_is_refused_on_resume(run_copy, phantom_root, tmp_path, capsys):
    marker = tmp_path / "ran"
    craft(run_copy / rundir.CHECKPOINTS / rundir.LAST, marker)
    code, _, err = run_cli(capsys, "train", "--data", phantom_root, "--out", run_copy, *FAST, "--resume")
    assert_refused(code, err, "which no privmed checkpoint holds", marker)


def test_a_crafted_generator_is_refused_by_synth_sample(tmp_path, capsys):
    from privmed.synth.training import GENERATOR_FILE

    (tmp_path / "gen").mkdir()
    marker = tmp_path / "ran"
    craft(tmp_path / "gen" / GENERATOR_FILE, marker, image_size=32, width=8, class_names=["a", "b"])
    code, _, err = run_cli(capsys, "synth", "sample", tmp_path / "gen", "--n", 4, "--out", tmp_path / "s")
    assert_refused(code, err, "which no privmed checkpoint holds", marker, tmp_path / "s")


# --------------------------------------------------------------------------- item 3: class names as folder names


@pytest.mark.parametrize("names", ["benign,../..", "benign,a/b", "benign,..", "benign,a\tb", "benign," + "x" * 101])
@pytest.mark.parametrize("command", [["synth", "evolve", "--epsilon", "4"], ["synth", "train"], ["train", *FAST]],
                         ids=["synth evolve", "synth train", "train"])
def test_class_names_that_cannot_be_folder_names_are_refused(phantom_root, tmp_path, capsys, command, names):
    out = tmp_path / "a" / "b" / "out"
    code, _, err = run_cli(capsys, *command, "--data", phantom_root, "--image-size", 32, "--class-names", names,
                           "--out", out)
    assert_refused(code, err, "cannot name a folder", tmp_path / "a")


def _generator_folder(folder: Path, class_names: list[str]) -> Path:
    import torch

    from privmed.synth.gan import Generator
    from privmed.synth.training import GENERATOR_FILE

    folder.mkdir()
    torch.save({"image_size": 32, "width": 8, "class_names": class_names,
                "state": Generator(image_size=32, width=8).state_dict()}, folder / GENERATOR_FILE)
    rundir.write_record(folder, PrivacyLedger(delta=1e-4, accountant="prv", clip_norm=1.0, n_private=100).record())
    return folder


def test_synth_sample_refuses_a_generators_class_name_that_leaves_the_folder(tmp_path, capsys):
    gen = _generator_folder(tmp_path / "gen", ["benign", "../../escaped"])
    out = tmp_path / "a" / "b" / "out"
    code, _, err = run_cli(capsys, "synth", "sample", gen, "--n", 4, "--out", out)
    assert_refused(code, err, "class name '../../escaped' (the class names of generator", tmp_path / "a",
                   tmp_path / "escaped")


def test_the_image_tree_writer_refuses_a_name_before_writing(tmp_path):
    import numpy as np

    from privmed.synth.sample import write_image_tree

    with pytest.raises(PrivmedError, match="holds a control character"):
        write_image_tree(tmp_path / "out", np.zeros((2, 16, 16)), np.array([0, 1]), class_names=("a", "b\n"),
                         generator=tmp_path, digest="0", seed=0)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- item 4: report.md shows text as text


def test_markdown_shows_links_images_and_headings_from_user_text_as_text(tmp_path):
    import re

    import pandas as pd

    from privmed.report.document import Bullets, Details, Heading, Paragraph, Table, to_markdown

    image, link, heading = "![x](https://tracker.example/p.png)", "[click](javascript:alert(1))", "# Privacy: epsilon=0.01"
    text = f"{image} {link}\n{heading}\n1. listed\n- item\n**bold** `code` ~~gone~~"
    blocks = [Heading("Study"), Paragraph(text), Paragraph(heading, "warning"), Bullets((heading, image)),
              Table(pd.DataFrame({image: [link], "value": [-0.5]}), heading), Details(link, (Paragraph(heading),))]
    md = to_markdown(heading, blocks, tmp_path / "files")
    assert [line for line in md.splitlines() if line.lstrip().startswith("#")] == [
        "# \\# Privacy: epsilon=0.01", "## Study"]  # the title's own heading, and privmed's
    assert not re.search(r"(?<!\\)[\[\]`~]", md), md  # no link, image, code or strikethrough opens
    assert "\\*\\*bold\\*\\* \\`code\\` \\~\\~gone\\~\\~" in md  # emphasis: privmed's own only (**Note:**)
    assert "https://" not in md and "https\\://tracker.example/p.png" in md  # no bare URL becomes a link
    assert "\n1\\. listed\n\\- item\n" in md  # no list
    assert "| \\[click\\](javascript:alert(1)) | -0.500 |" in md  # a cell: inline escapes only
    assert "dp_sgd__eps1__seed0" in to_markdown("t", [Paragraph("dp_sgd__eps1__seed0")], tmp_path / "f")  # in a word


# --------------------------------------------------------------------------- item 5: suppression counts patients


def _two_patient_group():
    """Group 'a': 12 images of 2 patients; group 'b': 20 images of 20 patients."""
    import numpy as np

    groups = np.array(["a"] * 12 + ["b"] * 20, dtype=object)
    patients = np.array([f"a{i % 2}" for i in range(12)] + [f"b{i}" for i in range(20)], dtype=object)
    return groups, patients, np.array([0, 1] * 16), np.linspace(0, 1, 32)


def test_a_group_of_two_patients_with_twelve_images_is_suppressed():
    from privmed.evaluation.fairness import fairlearn_differences, subgroup_metrics

    groups, patients, y, scores = _two_patient_group()
    table = subgroup_metrics(y_true=y, scores=scores, threshold=0.5, groups=groups, patient_ids=patients,
                             n_resamples=100).set_index("group")
    assert table.loc["a", "suppressed"] and table.loc[["a"], ["n", "auroc"]].isna().all().all()
    assert not table.loc["b", "suppressed"] and table.loc["b", "n"] == 20
    with_ids = fairlearn_differences(y_true=y, scores=scores, threshold=0.5, groups=groups, patient_ids=patients)
    assert with_ids.demographic_parity == 0  # only group 'b' takes part: no gap between groups


def test_a_group_of_few_training_patients_hides_every_groups_counts():
    import numpy as np

    from privmed.evaluation.fairness import group_sizes, subgroup_metrics, suppress_complements

    groups, _, y, scores = _two_patient_group()
    table = subgroup_metrics(y_true=y, scores=scores, threshold=0.5, groups=groups,
                             patient_ids=np.arange(32), n_resamples=100)  # in the test split, 12 patients of 'a'
    train_groups, train_patients, _, _ = _two_patient_group()  # in training, 12 images of 2 patients of 'a'
    hidden = suppress_complements(table, train_sizes=pd.Series(train_groups).value_counts(),
                                  train_patients=group_sizes(groups=train_groups, patient_ids=train_patients))
    assert not hidden["suppressed"].any()
    assert hidden["counts_suppressed"].all() and hidden[["n", "train_n"]].isna().all().all()


# --------------------------------------------------------------------------- item 6: one train per run folder


def test_a_second_train_into_a_folder_being_trained_is_refused(phantom_root, tmp_path, capsys):
    import fcntl
    import os

    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "a+") as held:  # what the first `privmed train` holds while it trains
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(f"{os.getpid()}\n")
        held.flush()
        code, _, err = run_cli(capsys, "train", "--data", phantom_root, "--out", out, *FAST)
        assert_refused(code, err, f"run folder '{out}' is in use by another privmed train (process {os.getpid()})")
        assert [p.name for p in out.iterdir()] == [".lock"]  # nothing of the second run was written
    code, _, err = run_cli(capsys, "train", "--data", phantom_root, "--out", out, *FAST)
    assert code == 0, err  # once the first is gone, the folder (holding only its lock file) is free


# --------------------------------------------------------------------------- item 7: an empty Poisson batch


def test_an_empty_poisson_batch_is_a_noise_only_step_and_is_accounted():
    import math

    import numpy as np
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    from privmed.privacy.units import PrivacyUnit
    from privmed.privacy.engine import Schedule, make_private

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    before = [p.detach().clone() for p in net.parameters()]
    data = TensorDataset(torch.rand(20, 1, 4, 4), torch.randint(0, 2, (20, 1)).float())
    empty = Schedule(sample_rate=1e-12, steps_per_epoch=3, steps=3, expected_batch=1)  # no image is ever drawn
    fit = make_private(net, torch.optim.SGD(net.parameters(), lr=0.1), data,
                       unit=PrivacyUnit("image", np.arange(20), 1), schedule=empty, noise_multiplier=1.0,
                       clip_norm=1.0, accountant="prv", grad_sample_mode="ew", replay_seed=0)
    loss = fit.run_epoch(lambda x, y: pytest.fail("an empty batch calls no model"))
    assert math.isnan(loss)  # nothing was sampled, so no loss was computed
    assert fit.opacus.accountant.history == [(1.0, 1e-12, 3)]  # three steps accounted, as for any batch
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters()))  # moved by the noise alone
