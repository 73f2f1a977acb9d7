"""Mean-ablation effects (total and direct) of the batched, padded production path against the independent
naive oracle (plain HF hooks, one unpadded text at a time), on tiny random-init models with peaked outputs."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from posttrain_probe.pair import load_model
from posttrain_probe.probes.neurons.ablate import ablation_effects, reference_means
from posttrain_probe.testing import _WORDS, make_tiny_checkpoint
from tests.reference import naive_neurons


def _texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 10))) for _ in range(n)]


@pytest.mark.parametrize(("family", "backend"), [("llama", "nnsight"), ("gpt2", "bridge")])
def test_ablation_effects_equal_the_naive_oracle(tmp_path, family, backend):
    path = make_tiny_checkpoint(family, tmp_path / family, seed=2)
    hf = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():  # peaked next-token distributions, so ablations move the entropy
        hf.lm_head.weight.mul_(20.0) if family == "llama" else hf.transformer.ln_f.weight.mul_(20.0)
    hf.save_pretrained(path)
    m = load_model(path, backend=backend)
    layer = m.n_layers - 1
    ref, ev = _texts(6, 0), _texts(5, 1)
    enc = m.tokenizer(ref, return_tensors="pt", padding=True)
    means = reference_means(m, enc["input_ids"], enc["attention_mask"], [layer])[layer]
    naive_means = naive_neurons.neuron_means(hf, m.tokenizer, ref, layer)
    assert torch.allclose(means, naive_means, atol=1e-5)
    conditions = [[], [3], [1, 2, 5, 8], list(range(0, m.d_mlp, 3))]
    enc = m.tokenizer(ev, return_tensors="pt", padding=True)
    stats = ablation_effects(m, enc["input_ids"], enc["attention_mask"], layer, conditions, means, batch_rows=8)
    clean, effects = naive_neurons.ablation_effects(hf, m.tokenizer, ev, layer, conditions, naive_means)
    np.testing.assert_allclose(stats.clean, clean, atol=1e-5)
    np.testing.assert_allclose(stats.effects, effects, atol=1e-5)
    assert np.abs(effects[-1, 0]).max() > 1e-2 and np.abs(effects[-1, 0] - effects[-1, 1]).max() > 1e-3
