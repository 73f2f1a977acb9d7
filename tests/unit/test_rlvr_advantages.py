"""Group advantages and the dynamic-sampling filter against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from posttrain_probe.rlvr.advantages import (
    ADV_EPS,
    expand_group_mask,
    group_advantages,
    nonzero_variance_groups,
)

R = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])  # two groups of G = 4


def test_std_scaled_advantages_use_the_unbiased_group_std():
    # group 0: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = sqrt(1/3); group 1: all equal → exactly 0
    a = group_advantages(R, 4)
    s = math.sqrt(1 / 3)
    pos, neg = 0.5 / (s + ADV_EPS), -0.5 / (s + ADV_EPS)
    assert a[:4].tolist() == pytest.approx([pos, neg, neg, pos], abs=1e-7)
    assert a[4:].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_population_std_and_no_std_variants():
    a = group_advantages(R, 4, unbiased=False)  # std 0.5
    assert a[0].item() == pytest.approx(0.5 / (0.5 + 1e-6), abs=1e-7)
    assert a[1].item() == pytest.approx(-0.5 / (0.5 + 1e-6), abs=1e-7)
    b = group_advantages(R, 4, scale="none")
    assert b.tolist() == [0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0, 0.0]


def test_advantages_sum_to_zero_in_every_group():
    r = torch.rand(6 * 5, generator=torch.Generator().manual_seed(0))
    a = group_advantages(r, 5).reshape(6, 5)
    assert torch.allclose(a.sum(1), torch.zeros(6), atol=1e-5)


def test_zero_variance_filter_and_expansion():
    keep = nonzero_variance_groups(R, 4)
    assert keep.tolist() == [True, False]
    assert expand_group_mask(keep, 4).tolist() == [True] * 4 + [False] * 4


def test_bad_shapes_and_options_are_refused():
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(R, 3)
    with pytest.raises(ValueError, match="scale"):
        group_advantages(R, 4, scale="rank")
    with pytest.raises(ValueError, match="group_size >= 2"):
        group_advantages(R, 1)
    with pytest.raises(ValueError, match="flat"):
        group_advantages(R.reshape(2, 4), 4)
