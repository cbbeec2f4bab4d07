"""The measurements behind chapter 1: correlation of neighbours and what they leak of a dropped unit."""
from __future__ import annotations

import math

import pytest
import torch

from dropviz.lecture.measure import neighbour_estimate, recovered_fraction, spatial_autocorrelation


def smooth_map(side=48, seed=0):
    """White noise blurred by a 7x7 box: neighbours strongly correlated, far units not."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, 1, side + 6, side + 6, generator=g)
    return torch.nn.functional.avg_pool2d(noise, 7, stride=1)[0, 0]


def test_autocorrelation_of_a_box_blur_matches_its_overlap():
    # For a k x k box blur of white noise, corr at shift d is the overlap (k - d) / k. Bartlett's formula for
    # a field's sample autocorrelation: var ~ sum over all 2D lags of rho^2 / N at most (the lags where the
    # true rho is 0; the terms in rho_d shrink it elsewhere). Here sum rho^2 = (1 + 2 * 91 / 49)^2 = 22.2 and
    # N = 160^2, so SE <= sqrt(22.2 / 25600) ~ 0.030; 0.135 is 4.5 SE (a false failure ~7e-6 a lag, 8 lags).
    rho = spatial_autocorrelation(smooth_map(side=160), 8)
    expected = torch.tensor([(7 - d) / 7 if d < 7 else 0.0 for d in range(1, 9)])
    assert torch.allclose(rho, expected, atol=0.135)
    assert rho[0] > rho[3] > rho[6]


def test_autocorrelation_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        spatial_autocorrelation(torch.zeros(1, 4, 4), 1)
    with pytest.raises(ValueError, match="max_offset"):
        spatial_autocorrelation(torch.zeros(4, 4), 4)


def test_neighbour_estimate_is_the_mean_of_kept_neighbours():
    values = torch.arange(9.0).view(3, 3)
    mask = torch.ones(3, 3)
    mask[1, 1] = 0
    mask[0, 0] = 0
    estimate, has = neighbour_estimate(values, mask)
    assert estimate[1, 1] == pytest.approx((1 + 2 + 3 + 5 + 6 + 7 + 8) / 7)
    assert has.all()


def test_isolated_holes_fall_back_to_the_mean_of_kept_units():
    values = torch.rand(9, 9, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(9, 9)
    mask[2:7, 2:7] = 0  # the centre has no kept unit within 1 pixel
    estimate, has = neighbour_estimate(values, mask)
    assert not has[4, 4] and has[2, 2]
    assert estimate[4, 4] == pytest.approx(float(values[mask > 0].mean()))


def test_single_holes_are_recovered_but_blocks_are_not():
    """R^2 of the dropped units from their kept neighbours, averaged over 10 independent maps. 20% scattered holes:
    about 0.83 (a hole's neighbours share most of its 7x7 box), per-map SD about 0.02. A 20x20 block: about 0.12
    (only its border ring, 76 of its 400 units, has kept neighbours), per-map SD about 0.09, so single maps range
    from 0.03 to 0.30. Over 10 maps the SEs are about 0.007 and 0.03: 0.6 and 0.3 are over 6 SE from both."""
    scattered, block = [], []
    for seed in range(10):
        x = smooth_map(seed=seed)
        holes = (torch.rand(x.shape, generator=torch.Generator().manual_seed(100 + seed)) >= 0.2).float()
        square = torch.ones_like(x)
        square[10:30, 10:30] = 0
        scattered.append(recovered_fraction(x, holes))
        block.append(recovered_fraction(x, square))
    assert sum(scattered) / 10 > 0.6, scattered
    assert sum(block) / 10 < 0.3, block
    assert math.isnan(recovered_fraction(x, torch.ones_like(x)))
