"""Generation, pure parts: position ids from the attention mask."""

from __future__ import annotations

import torch

from posttrain_probe.pair.generate import position_ids_from_mask


def test_position_ids_from_mask_hand_computed():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert position_ids_from_mask(mask).tolist() == [[1, 1, 0, 1, 2], [0, 1, 2, 3, 4]]
