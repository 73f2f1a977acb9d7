"""The few-shot TRUE/FALSE prompt has one home (pair.prompts) that truth and patching both use."""

from __future__ import annotations

import pytest

from posttrain_probe.pair.prompts import FewShotPrompt, few_shot_true_false
from posttrain_probe.probes.patching import PatchingConfig
from posttrain_probe.probes.patching import pairs as _patching_pairs
from posttrain_probe.probes.truth import TruthConfig
from posttrain_probe.probes.truth import model as _truth_model

SHOTS = (("Paris is in France.", 1), ("Rome is in Spain.", 0))


def test_truth_and_patching_render_the_same_prompt():
    text, span = few_shot_true_false("Oslo is in Norway.", SHOTS)
    assert text == (
        "Paris is in France. This statement is: TRUE\nRome is in Spain. This statement is: FALSE\n"
        "Oslo is in Norway. This statement is:"
    )
    assert text[span[0] : span[1]] == "Oslo is in Norway."
    truth = TruthConfig().fewshot.build("Oslo is in Norway.", SHOTS)
    p = PatchingConfig()
    patching = FewShotPrompt(SHOTS, p.suffix, p.true_label, p.false_label)
    assert truth == (text, span) and patching.render("Oslo is in Norway.") == text
    assert patching.prefix == text[: span[0]]
    assert _truth_model.FewShotFormat is FewShotPrompt and _patching_pairs.FewShotPrompt is FewShotPrompt


def test_equal_labels_are_refused_with_a_fix():
    with pytest.raises(ValueError, match="two different labels"):
        FewShotPrompt(true_label=" A", false_label=" A")
