"""Security on tiny checkpoints: trust_remote_code is never passed unless asked; pickled-only checkpoints
are refused."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from posttrain_probe.testing import make_tiny_checkpoint

    return make_tiny_checkpoint("llama", tmp_path_factory.mktemp("sec") / "m")


def _record_from_pretrained(monkeypatch) -> list[tuple[str, dict]]:
    import transformers

    calls: list[tuple[str, dict]] = []
    for cls_name in ("AutoConfig", "AutoTokenizer", "AutoModelForCausalLM"):
        cls = getattr(transformers, cls_name)
        real = cls.from_pretrained.__func__

        def wrapped(klass, *args, _real=real, _name=cls_name, **kwargs):
            calls.append((_name, dict(kwargs)))
            return _real(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(wrapped))
    return calls


@pytest.mark.parametrize("backend", ["nnsight", "bridge"])
def test_load_pair_passes_trust_remote_code_false_to_every_from_pretrained(tiny, monkeypatch, backend):
    from posttrain_probe.pair import load_pair

    calls = _record_from_pretrained(monkeypatch)
    pair = load_pair(tiny, tiny, backend=backend)
    assert {name for name, _ in calls} == {"AutoConfig", "AutoTokenizer", "AutoModelForCausalLM"}
    assert all(kw.get("trust_remote_code", "missing") is False for _, kw in calls), calls
    models = [kw for name, kw in calls if name == "AutoModelForCausalLM"]
    assert len(models) == 2 and all(kw["use_safetensors"] is True for kw in models)
    assert pair.base.provenance["trust_remote_code"] is False


def test_trust_remote_code_is_passed_only_when_the_user_asks(tiny, monkeypatch):
    from posttrain_probe.pair import load_model

    calls = _record_from_pretrained(monkeypatch)
    load_model(tiny, trust_remote_code=True)
    assert calls and all(kw["trust_remote_code"] is True for _, kw in calls)


def test_a_pickled_only_checkpoint_is_refused_not_unpickled(tiny, tmp_path):
    import shutil

    from posttrain_probe.pair import ModelLoadError, load_model

    d = tmp_path / "bin_only"
    shutil.copytree(tiny, d)
    (d / "model.safetensors").unlink()
    torch.save({"x": torch.zeros(1)}, d / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="never unpickles") as e:
        load_model(d)
    assert "pytorch_model.bin" in str(e.value) and "\n" not in str(e.value)


def test_a_folder_without_weights_says_so_not_pickle(tiny, tmp_path):
    import shutil

    from posttrain_probe.pair import ModelLoadError, load_model

    d = tmp_path / "no_weights"
    shutil.copytree(tiny, d)
    (d / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="has no model weights") as e:
        load_model(d)
    msg = str(e.value)
    assert "model.safetensors" in msg and "index.json" in msg and ".bin" not in msg and "\n" not in msg


def test_rlvr_refuses_a_pickled_only_start_model_in_one_line(tiny, tmp_path):
    import shutil

    from posttrain_probe.rlvr.config import ConfigError, RLVRConfig
    from posttrain_probe.rlvr.session import _load_causal_lm

    d = tmp_path / "bin_only"
    shutil.copytree(tiny, d)
    (d / "model.safetensors").unlink()
    torch.save({"x": torch.zeros(1)}, d / "pytorch_model.bin")
    with pytest.raises(ConfigError, match="safetensors weights") as e:
        _load_causal_lm(str(d), RLVRConfig(), torch.device("cpu"))
    assert "\n" not in str(e.value)
