"""CLIP encoder over open_clip: texts and images to float32, L2-normalised feature vectors."""

from __future__ import annotations

import filecmp
import logging
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx2  # huggingface_hub 2's HTTP client: its errors escape open_clip's downloads
import numpy as np
import open_clip
import torch
from open_clip.transformer import text_global_pool
from PIL import Image
from safetensors import SafetensorError

from search.config import EncoderSpec
from search.errors import EncoderLoadError, one_line
from search.types import FeatureVector

logger = logging.getLogger(__name__)

PAD_TOKEN = 0  # open_clip's SimpleTokenizer pads with 0 after the end-of-text token
TRIMMABLE_POOLING = ("argmax", "eos", "first")  # pooling that never reads the padding positions
SAFE_WEIGHTS_SUFFIX = ".safetensors"
MODEL_CONFIG = "open_clip_config.json"


_WEIGHTS_LOADED = threading.local()  # checkpoints the current thread's open_clip call loaded (see ClipEncoder.load)


class _UnsafeWeightsError(Exception):
    """Raised inside open_clip when it is about to read a checkpoint that is not a safetensors file."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.name = Path(path).name


DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?|mps")
"""The devices a model runs on. torch accepts more names (meta, xla, ...) that cannot run it, and says so only in
a traceback from deep inside the first encode."""


def resolve_device(device: str) -> str:
    """'auto' becomes 'cuda' when a GPU is present, else 'cpu'; EncoderLoadError for any other name than cpu,
    cuda, cuda:N or mps, or for a GPU this machine lacks."""
    if not DEVICE.fullmatch(device):
        raise EncoderLoadError(f"device {device[:40]!r} cannot run the model; use auto, cpu, cuda, cuda:N or mps")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and int(device.partition(":")[2] or 0) >= torch.cuda.device_count():
        raise EncoderLoadError(f"device {device} is not on this machine ({torch.cuda.device_count()} CUDA GPUs); "
                               "use auto or cpu")
    if device == "mps" and not torch.backends.mps.is_available():
        raise EncoderLoadError("device mps is not available on this machine; use auto or cpu")
    return device


class ClipEncoder:
    """One open_clip model, loaded once, in eval mode, used under `torch.inference_mode`."""

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        spec: EncoderSpec,
    ) -> None:
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.spec = spec
        self.device = next(model.parameters()).device
        self.can_trim_text = isinstance(model, open_clip.CLIP) and model.text_pool_type in TRIMMABLE_POOLING
        # Set by search.model.onnx_text once its export passed the check; None: text runs on PyTorch.
        self.onnx_text: Callable[[np.ndarray], np.ndarray] | None = None
        self.dim = int(self.encode_text([""]).shape[1])
        size = getattr(getattr(model, "visual", None), "image_size", 224)
        self.input_side = int(max(size) if isinstance(size, tuple | list) else size)  # the square the model reads

    @classmethod
    def load(cls, spec: EncoderSpec, device: str = "cpu", threads: int = 0) -> ClipEncoder:
        """Load a model by open_clip name + pretrained tag or file, `hf-hub:ID` or `local-dir:DIR`."""
        device = resolve_device(device)
        configure_threads(threads)
        _only_safetensors()
        _WEIGHTS_LOADED.count = 0
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.model, pretrained=spec.pretrained, device=device)
            tokenizer = open_clip.get_tokenizer(spec.model)
        except (ImportError, httpx2.HTTPError) as exc:  # a tokenizer fallback or a download that broke off
            raise EncoderLoadError(_load_failure_message(spec, exc)) from exc
        except _UnsafeWeightsError as exc:
            raise EncoderLoadError(f"cannot load CLIP model {spec}: its weights file {exc.name} is not "
                                   "safetensors; only .safetensors weights are accepted (pickled .bin/.pt/.pth "
                                   "files can run code): convert it with safetensors.torch.save_file") from None
        except (RuntimeError, OSError, ValueError, SafetensorError) as exc:
            raise EncoderLoadError(_load_failure_message(spec, exc)) from exc
        if _WEIGHTS_LOADED.count == 0 and spec.expects_weights:
            # open_clip only logs a warning when weights cannot be had and goes on with a random model.
            raise EncoderLoadError(f"cannot load CLIP model {spec}: no weights were loaded (the download failed "
                                   "or the repo or folder holds no open_clip weights); check the name, the "
                                   "network or HF_ENDPOINT, or use --pretrained none for random weights on purpose")
        logger.info("loaded CLIP model %s on %s", spec, device)
        return cls(model, preprocess, tokenizer, spec)

    def encode_text(self, texts: Sequence[str]) -> FeatureVector:
        """Feature vectors for texts, one row each."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        onnx_text = self.onnx_text  # read once: another thread may switch it on meanwhile
        if onnx_text is not None:
            return _normalised(torch.from_numpy(onnx_text(trim_tokens(tokens).numpy())))
        with torch.inference_mode():
            features = trimmed_text_features(self.model, tokens) if self.can_trim_text \
                else self.model.encode_text(tokens)
        return _normalised(features)

    def preprocess_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The model's eval transform applied to RGB images, stacked into one batch tensor."""
        return torch.stack([self.preprocess(image) for image in images])

    def encode_pixels(self, pixels: torch.Tensor) -> FeatureVector:
        """Feature vectors for an already preprocessed batch (N, 3, H, W)."""
        with torch.inference_mode():
            return _normalised(self.model.encode_image(pixels.to(self.device)))

    def encode_preprocessed(self, pictures: Sequence[torch.Tensor]) -> FeatureVector:
        """Feature vectors for pictures each already through `preprocess_images` (3, H, W), as one batch."""
        return self.encode_pixels(torch.stack(list(pictures)))

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> FeatureVector:
        """Feature vectors for RGB images (see `search.model.images.load_image`), encoded in batches."""
        if not images:
            return np.empty((0, self.dim), np.float32)
        batches = [self.encode_pixels(self.preprocess_images(images[start:start + batch_size]))
                   for start in range(0, len(images), batch_size)]
        return np.concatenate(batches)


def model_files(folder: Path) -> list[Path]:
    """The files a `local-dir:` model is: its open_clip_config.json and its safetensors weights (what a bundle
    copies to carry its model along); none when the folder has no config."""
    if not (folder / MODEL_CONFIG).is_file():
        return []
    return [folder / MODEL_CONFIG, *sorted(path for path in folder.glob(f"*{SAFE_WEIGHTS_SUFFIX}") if path.is_file())]


def same_model(first: EncoderSpec, second: EncoderSpec) -> bool:
    """Whether two specs name one model: equal names, or two `local-dir:` folders holding the same files (a bundle
    carries a copy of its builder's model folder)."""
    if first == second:
        return True
    folders = first.local_dir, second.local_dir
    if folders[0] is None or folders[1] is None:
        return False
    files = [model_files(folder) for folder in folders]
    return bool(files[0]) and [path.name for path in files[0]] == [path.name for path in files[1]] and all(
        filecmp.cmp(one, other, shallow=False) for one, other in zip(*files, strict=True))


def _only_safetensors() -> None:
    """Make open_clip refuse every full-model checkpoint that is not a safetensors file (DESIGN: trusted weights).

    open_clip picks the file itself (a local-dir's preferred name may be a `.bin` even beside a
    `.safetensors`; a Hub repo without safetensors falls back to `open_clip_pytorch_model.bin`) and
    torch.load-s anything else, pickle included (with weights_only=True, still a pickle parser). Its
    `load_checkpoint` is the one call every such file passes through, so the check sits there: before
    the file is opened. Installed once, on first load (no import-time side effect).
    """
    current = open_clip.factory.load_checkpoint
    if getattr(current, "only_safetensors", False):
        return

    def checked(model: torch.nn.Module, checkpoint_path: str, *args: Any, **kwargs: Any) -> Any:
        if not str(checkpoint_path).endswith(SAFE_WEIGHTS_SUFFIX):
            raise _UnsafeWeightsError(str(checkpoint_path))
        result = current(model, checkpoint_path, *args, **kwargs)
        _WEIGHTS_LOADED.count = getattr(_WEIGHTS_LOADED, "count", 0) + 1
        return result

    checked.only_safetensors = True  # type: ignore[attr-defined]
    open_clip.factory.load_checkpoint = checked


def configure_threads(threads: int) -> None:
    """Set torch's intra-op thread count (the one place the project does); 0 keeps torch's default.

    ONNX Runtime's text tower takes the same count (search/model/onnx_text.py). On the 2-core CPU a text query
    takes ~9 ms with 2 threads and ~15 ms with 1 (bench/query_latency.py), so the default (one thread per
    core) is right for a dedicated server; a smaller number leaves cores to other processes.
    """
    if threads < 0:
        raise ValueError(f"threads must be 0 (torch's default) or a positive number, got {threads}")
    if threads and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
        logger.info("torch uses %d threads", threads)


def trim_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """Token ids cut after the last column that holds a real token in any row (at least one column)."""
    real = tokens != PAD_TOKEN
    length = int(real.any(dim=0).nonzero().max()) + 1 if real.any() else 1
    return tokens[:, :length]


def text_tower(model: open_clip.CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """`model.encode_text` (unnormalised) over a context as long as `tokens` has columns, not the full 77.

    The causal mask keeps padding from reaching earlier positions, so over `trim_tokens(tokens)` this equals
    the full 77-token pass at a fraction of the cost. Needs a pooling that never reads padding
    (see TRIMMABLE_POOLING). The length comes from the shape only, so the function exports to ONNX.
    """
    length = tokens.shape[1]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    mask = None if model.attn_mask is None else model.attn_mask[:length, :length]
    x = model.ln_final(model.transformer(x, attn_mask=mask))
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if isinstance(model.text_projection, torch.nn.Linear):
        return model.text_projection(x)
    return x if model.text_projection is None else x @ model.text_projection


def trimmed_text_features(model: open_clip.CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """`model.encode_text(tokens)` (unnormalised), computed over only the columns holding real tokens."""
    return text_tower(model, trim_tokens(tokens))


def _normalised(features: torch.Tensor) -> FeatureVector:
    vectors = torch.nn.functional.normalize(features.float(), dim=-1)
    return vectors.cpu().numpy().astype(np.float32, copy=False)


def _load_failure_message(spec: EncoderSpec, exc: BaseException) -> str:
    detail = one_line(exc)
    return (f"cannot load CLIP model {spec}: {detail}. Check the open_clip model name and pretrained tag "
            "(open_clip.list_pretrained()), the network for Hub downloads, or pass local-dir:FOLDER "
            "with open_clip_config.json and weights")
