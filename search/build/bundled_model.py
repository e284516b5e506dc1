"""A bundle carries its `local-dir:` model: the model folder's config and safetensors weights copied into the bundle's
`model/` folder, so the bundle resolves its model wherever it is moved or published. A Hub or built-in name
(`hf-hub:ID`, `ViT-B-32` / `laion2b_s34b_b79k`) resolves anywhere and is recorded as it is."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from search.bundle.durable import atomic_write
from search.bundle.manifest import MODEL_FOLDER
from search.bundle.store import is_model_file
from search.config import LOCAL_DIR_PREFIX, EncoderSpec
from search.errors import SearchError
from search.model.encoder import model_files

logger = logging.getLogger(__name__)


class ModelCopyError(SearchError):
    """A `local-dir:` model that cannot be carried into the bundle."""


def bundled_encoder(spec: EncoderSpec, out: Path) -> EncoderSpec:
    """The model the bundle in `out` records: a `local-dir:` folder copied to `out/model` (then named there), any
    other spec as it is. Files of an earlier copy that the model lacks are removed."""
    folder = spec.resolved(Path.cwd()).local_dir
    if folder is None:
        return spec
    target = out / MODEL_FOLDER
    if folder.resolve() != target.resolve():
        files = model_files(folder)
        if not files:
            raise ModelCopyError(f"model folder {folder} has no open_clip_config.json to carry into the bundle; "
                                 "pass local-dir: with the folder open_clip loads the model from")
        target.mkdir(parents=True, exist_ok=True)
        stale = set(target.iterdir()) - {target / path.name for path in files}
        foreign = sorted(path.name for path in stale if not is_model_file(f"{MODEL_FOLDER}/{path.name}")
                         or path.is_symlink() or not path.is_file())
        if foreign:  # someone's own files: never deleted, the build stops before touching them
            raise ModelCopyError(f"{target} holds {foreign[0]!r}, which is not a model file a build wrote; move it "
                                 "out of the way, or build into another --out folder")
        for path in stale:  # an earlier copy's weights the model no longer has
            path.unlink()
        for path in files:
            atomic_write(target / path.name, lambda tmp, source=path: shutil.copyfile(source, tmp))
        logger.info("copied model %s into %s, so the bundle carries it", folder, target)
    return EncoderSpec(f"{LOCAL_DIR_PREFIX}{target.resolve()}", None)
