"""No deprecated transformers API in a traced run: causal tracing (with the KV-cache reuse path) and greedy
generation on a tiny Gemma-3-style checkpoint, with FutureWarning and transformers' DeprecationWarnings as errors
and transformers' own "deprecated" log lines collected."""

from __future__ import annotations

import logging
import warnings

import pytest

from posttrain_probe.data.records import Fact
from posttrain_probe.pair import encode, load_pair
from posttrain_probe.pair.generate import greedy_generate
from posttrain_probe.pair.restore import kv_cache_reuse_works
from posttrain_probe.probes.tracing import TracingConfig, run_tracing
from posttrain_probe.testing import make_tiny_checkpoint

PROMPTS = [
    ("the city of river is in", "city of river"),
    ("bread was born in the", "bread"),
    ("the poison works for", "poison"),
]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.mark.parametrize("backend", ["nnsight", "bridge"])
def test_a_traced_gemma3_run_uses_no_deprecated_transformers_api(backend, tmp_path):
    from transformers.utils import logging as hf_logging

    ckpt = make_tiny_checkpoint("gemma3", tmp_path / "gemma3")
    hf_logging.warning_once.cache_clear()  # warning_once would stay silent after an earlier test's warning
    collect = _Collect()
    hf_logger = logging.getLogger("transformers")
    hf_logger.addHandler(collect)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)  # e.g. "`past_key_values` is deprecated ... Use `cache`"
            warnings.filterwarnings("error", message=r".*deprecated.*", category=DeprecationWarning)
            pair = load_pair(ckpt, ckpt, backend=backend)
            assert pair.base.arch.model_type == "gemma3_text"
            tok = pair.tokenizer
            facts = []
            for prompt, subject in PROMPTS:
                answer = int(pair.base.run(tok(prompt, return_tensors="pt")["input_ids"]).logits[0, -1].argmax())
                facts.append(Fact(prompt=prompt, subject=subject, answer=" " + tok.convert_ids_to_tokens(answer)))
            cfg = TracingConfig(n_samples=2, window=1, n_boot=20, progress=False, kv_reuse="auto")
            res = run_tracing(pair, facts, cfg)
            assert res.summary["n_common"] + res.summary["n_skipped"] >= 1
            if backend == "nnsight":  # generation runs on nnsight (the bridge does not fill HF's KV cache)
                assert kv_cache_reuse_works(pair.base)  # the cache= path gives the full forward's logits
                ids, mask = encode(tok, [p for p, _ in PROMPTS])
                greedy_generate(pair.base, ids, mask, max_new_tokens=3)
    finally:
        hf_logger.removeHandler(collect)
    deprecated = [line for line in collect.lines if "deprecat" in line.lower()]
    assert not deprecated, deprecated
