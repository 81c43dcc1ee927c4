from __future__ import annotations

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
