"""DiffAugment for the generator's discriminator: differentiable, per sample, and what each transform does."""

from __future__ import annotations

import torch

from privmed.synth.diffaugment import CUTOUT_RATIO, _cutout, _translate, diff_augment


def test_each_output_depends_on_its_own_sample_only_and_gradients_flow():
    torch.manual_seed(0)
    x = (torch.rand(4, 1, 32, 32) * 2 - 1).requires_grad_(True)
    diff_augment(x)[0].sum().backward()
    assert x.grad[0].abs().sum() > 0  # the generator is trained through the augmentation
    assert torch.count_nonzero(x.grad[1:]) == 0  # no batch statistic: DP-SGD's per-sample clipping still holds


def test_translation_shifts_content_and_fills_the_border_with_mid_grey():
    torch.manual_seed(1)
    ramp = torch.arange(32.0).view(1, 1, 1, 32).expand(8, 1, 32, 32).contiguous() + 1
    shifted = _translate(ramp)
    for image in shifted[:, 0]:
        row = image[16]
        kept = row[row > 0]
        assert torch.equal(kept, torch.arange(kept[0].item(), kept[0].item() + len(kept)))  # a shift, no resampling
        assert 32 - len(kept) <= 4  # at most 1/8 of the side
        assert (row == 0).sum() == 32 - len(kept)


def test_cutout_zeroes_at_most_one_square_of_half_the_side():
    torch.manual_seed(2)
    out = _cutout(torch.ones(16, 1, 32, 32))
    side = int(32 * CUTOUT_RATIO)
    for image in out[:, 0]:
        rows, cols = torch.nonzero(image == 0, as_tuple=True)
        assert 0 < len(rows) <= side * side
        assert rows.max() - rows.min() < side and cols.max() - cols.min() < side
        assert len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)  # a rectangle
