"""Image and text embeddings for the keyframe memory's semantic search (SigLIP / CLIP).

A Hugging Face folder or a cached id (``google/siglip-base-patch16-224``,
``openai/clip-vit-base-patch32``, ...) loaded with ``AutoModel`` / ``AutoTokenizer`` /
``AutoImageProcessor`` (never downloaded: :func:`vilasr_ros.engines.hf.resolve_model_path`).
Embeddings are the model's projected features (``get_image_features`` / ``get_text_features``),
L2-normalised, so a dot product is the cosine similarity the model was trained with.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from vilasr_ros.errors import require

logger = logging.getLogger(__name__)


class ImageTextEmbedder:
    """One SigLIP or CLIP model (module docstring).

    Args:
        model: Folder or Hugging Face id in the local cache.
        device: ``cpu`` or ``cuda`` (default: cuda when available).

    Raises:
        ModelNotFoundError: No weights here. MissingDependencyError: no torch.
    """

    def __init__(self, model: str | Path, device: str | None = None):
        torch = require("torch", "transformers")
        import transformers

        from vilasr_ros.engines.hf import resolve_model_path

        path = resolve_model_path(model)
        self.name = str(model)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = transformers.AutoModel.from_pretrained(path).to(self.device).eval()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        self.image_processor = transformers.AutoImageProcessor.from_pretrained(path)
        # SigLIP was trained on text padded to its full length; CLIP on the text alone.
        self._pad = "max_length" if "siglip" in type(self.model).__name__.lower() else True
        self._torch = torch

    @staticmethod
    def _features(out) -> "np.ndarray":
        feats = getattr(out, "pooler_output", out)  # transformers 5 returns an output with the projection there
        feats = feats.float().cpu().numpy()
        return feats / np.maximum(np.linalg.norm(feats, axis=-1, keepdims=True), 1e-12)

    def images(self, rgbs: list[np.ndarray]) -> np.ndarray:
        """(N, D) float32 unit vectors of N (H, W, 3) uint8 RGB images."""
        inputs = self.image_processor(images=list(rgbs), return_tensors="pt").to(self.device)
        with self._torch.no_grad():
            return self._features(self.model.get_image_features(pixel_values=inputs["pixel_values"]))

    def text(self, text: str) -> np.ndarray:
        """(D,) float32 unit vector of a text (``"a red backpack"``)."""
        ids = self.tokenizer([text], return_tensors="pt", padding=self._pad, truncation=True,
                             max_length=getattr(self.model.config.text_config, "max_position_embeddings", 64))
        kwargs = {"input_ids": ids["input_ids"].to(self.device)}
        if "attention_mask" in ids and self._pad is True:
            kwargs["attention_mask"] = ids["attention_mask"].to(self.device)
        with self._torch.no_grad():
            return self._features(self.model.get_text_features(**kwargs))[0]
