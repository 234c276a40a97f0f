"""One floating-point-safe Gaussian sampler for every release outside DP-SGD (privmed/privacy/mechanisms.py)."""

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

import privmed
from privmed.privacy.mechanisms import DRAWS, gaussian_noise

PACKAGE = Path(privmed.__file__).parent
#: calls that draw Gaussian (or Gaussian-like) numbers
NORMAL_CALLS = {"randn", "randn_like", "normal", "normal_", "standard_normal", "trunc_normal_"}
#: (module, enclosing function) that draw normals which are not the noise of a release, each with its reason
NOT_A_RELEASE = {
    ("privacy/mechanisms.py", "gaussian_noise"): "the one sampler",
    ("synth/sample.py", "generate"): "a generator's latent codes at sampling time (post-processing)",
    ("synth/training.py", "_build"): "the fixed latent codes of the progress grid",
    ("synth/training.py", "discriminator_backward"): "the GAN's latent codes; the discriminator's DP noise is "
                                                     "Opacus's",
    ("synth/training.py", "_generator_step"): "the GAN's latent codes for the generator's own update",
    ("data/shift.py", "digital_scanner"): "a simulated acquisition shift of images",
    ("data/shift.py", "acquisition_augment"): "augmentation",
    ("synth/candidates.py", "mutate"): "private evolution's data-independent variation of candidates",
    ("data/phantom/population.py", "_draw_attributes"): "the phantom: data drawn from no patient",
    ("data/phantom/population.py", "_draw_contour"): "the phantom",
    ("data/phantom/population.py", "_draw_views"): "the phantom",
    ("data/phantom/population.py", "_draw_findings"): "the phantom",
    ("data/phantom/draw.py", "_background"): "the phantom's rendering",
    ("data/phantom/draw.py", "_render"): "the phantom's rendering",
    ("models/vit.py", "__init__"): "weight initialisation",
    ("synth/gan.py", "_dcgan_init"): "weight initialisation",
    ("audit/canaries.py", "crafted_canaries"): "an audit's canaries (the auditor's design, not a release)",
}


def _normal_draws() -> set[tuple[str, str]]:
    """(module, enclosing function) of every call named in NORMAL_CALLS inside privmed."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        module = path.relative_to(PACKAGE).as_posix()

        def visit(node, function="<module>"):
            for child in ast.iter_child_nodes(node):
                name = function
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    name = child.name
                if isinstance(child, ast.Call):
                    callee = child.func
                    called = callee.attr if isinstance(callee, ast.Attribute) else getattr(callee, "id", None)
                    if called in NORMAL_CALLS:
                        found.add((module, function))
                visit(child, name)

        visit(tree)
    return found


def test_no_release_draws_its_noise_outside_the_one_sampler():
    """The feature centre, the one-shot head and private evolution's histogram once drew plain ``torch.randn``."""
    unexplained = _normal_draws() - set(NOT_A_RELEASE)
    assert not unexplained, f"Gaussian draws outside privmed.privacy.mechanisms.gaussian_noise: {sorted(unexplained)}"
    assert ("privacy/mechanisms.py", "gaussian_noise") in _normal_draws()
    stale = set(NOT_A_RELEASE) - _normal_draws()
    assert not stale, f"NOT_A_RELEASE names draws that no longer exist (remove them): {sorted(stale)}"


@pytest.mark.parametrize("std", [0.5, 3.0])
def test_the_sampler_has_the_std_it_is_asked_for(std):
    g = torch.Generator().manual_seed(0)
    x = gaussian_noise(200_000, std, g).numpy()
    assert x.dtype == np.float64 and x.shape == (200_000,)
    # the sample std of n normals has std about sigma / sqrt(2n) (0.16% here): 5 of those either side
    assert abs(x.std() / std - 1) < 5 / math.sqrt(2 * len(x))
    assert abs(x.mean()) < 5 * std / math.sqrt(len(x))
    assert stats.kstest(x / std, "norm").pvalue > 1e-3


def test_the_sampler_sums_several_normals_as_opacus_secure_mode():
    """Not one normal per coordinate: one thrown away, then DRAWS of them summed and halved."""
    shape = (3, 4)
    noise = gaussian_noise(shape, 2.0, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    torch.normal(0.0, 2.0, size=(1, 1), generator=g, dtype=torch.float64)
    expected = sum(torch.normal(0.0, 2.0, size=shape, generator=g, dtype=torch.float64) for _ in range(DRAWS)) / 2
    assert DRAWS == 4 and torch.equal(noise, expected)
    plain = torch.randn(shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 2.0
    assert not torch.allclose(noise, plain)
    assert not gaussian_noise(5, 0.0, torch.Generator().manual_seed(0)).any()


def test_every_release_outside_dp_sgd_draws_from_the_sampler():
    """The three releases give exactly the sampler's noise for the same generator state."""
    from privmed.synth.evolve import noisy_histogram
    from privmed.training import dp_head
    from privmed.training.centre import _noisy_unit_mean

    hist = np.zeros((2, 5))
    assert np.array_equal(noisy_histogram(hist, sigma=1.5, generator=torch.Generator().manual_seed(1)),
                          gaussian_noise((2, 5), 1.5, torch.Generator().manual_seed(1)).numpy())
    rows = torch.zeros(4, 3, dtype=torch.float64)
    centre, stage = _noisy_unit_mean(rows, bound=2.0, noise_multiplier=0.5,
                                     generator=torch.Generator().manual_seed(2), groups=None)
    assert (stage.stage, stage.noise_multiplier, stage.sample_rate, stage.steps) == ("feature_centering", 0.5, 1.0, 1)
    assert torch.equal(centre, gaussian_noise(3, 1.0, torch.Generator().manual_seed(2)) / 4)
    stats_ = dp_head.Statistics(torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), 4)
    noisy, _ = dp_head.release_moment(stats_, noise_multiplier=0.5, bound=2.0,
                                      generator=torch.Generator().manual_seed(3))
    assert torch.equal(noisy.moment, gaussian_noise(3, 1.0, torch.Generator().manual_seed(3)))
    noisy, _ = dp_head.release(stats_, noise_multiplier=0.5, bound=2.0, generator=torch.Generator().manual_seed(4))
    assert torch.equal(noisy.gram, noisy.gram.T)
    g = torch.Generator().manual_seed(4)
    upper = gaussian_noise((3, 3), 2.0, g).triu()
    assert torch.equal(noisy.gram, upper + upper.triu(1).T)
    assert torch.equal(noisy.moment, gaussian_noise(3, 1.0, g))
