from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_minilm_embeddings_shape_norm_and_similarity(minilm):
    vecs = minilm.embed(
        ["How do I bake bread?", "What is a recipe for baking bread?", "The stock market crashed."]
    )
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    sim = vecs @ vecs.T
    assert sim[0, 1] > 0.6 > sim[0, 2]


TEXTS = [
    "How do I bake bread?",
    "  leading and trailing spaces  \n",
    "UPPER case and lower case",
    "",
    "漢字とひらがな, émigré, naïve 😀",
    " ".join(f"{i} apples by the river" for i in range(120)),  # past the 256-token limit: cut alike
    "What is a recipe for baking bread?",
    "The stock market crashed.",
    "a",
]


@pytest.mark.parametrize("batch_size", [2, 64])
def test_the_plain_path_gives_sentence_transformers_vectors(minilm, batch_size):
    """The embedded MiniLM runs without importing sentence-transformers; its vectors are the library's."""
    from sentence_transformers import SentenceTransformer

    from dataflywheel.models.st import PlainEncoder, SentenceTransformersBackend

    assert isinstance(minilm.plain, PlainEncoder) and minilm.plain.pooling == "mean"
    reference = SentenceTransformer(minilm.path, device="cpu")
    for normalize in (True, False):
        want = reference.encode(TEXTS, batch_size=batch_size, normalize_embeddings=normalize)
        got = SentenceTransformersBackend(minilm.path, "cpu", batch_size=batch_size, normalize=normalize)
        np.testing.assert_allclose(got.embed(TEXTS), want, atol=1e-6)


def test_other_layouts_go_through_sentence_transformers(tmp_path, minilm):
    import shutil

    from dataflywheel.models.st import PlainEncoder

    folder = tmp_path / "m"
    shutil.copytree(minilm.path, folder)
    pool = folder / "1_Pooling" / "config.json"
    config = json.loads(pool.read_text())
    assert PlainEncoder.load(str(folder), "cpu") is not None
    pool.write_text(
        json.dumps({**config, "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": True})
    )
    assert PlainEncoder.load(str(folder), "cpu") is None  # max pooling: the library's own path
    pool.write_text(json.dumps(config))
    modules = json.loads((folder / "modules.json").read_text())
    extra = {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}
    (folder / "modules.json").write_text(json.dumps([*modules, extra]))
    assert PlainEncoder.load(str(folder), "cpu") is None  # a dense layer after pooling
