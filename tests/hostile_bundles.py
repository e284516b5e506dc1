"""A corpus of hostile index bundles, crafted as an attacker would: every manifest checksum is consistent.

Each case starts from a small valid bundle made by the real writer (8 items, 64-d like the demo model, local
PNG thumbnails under images/) and changes one thing. `write_corpus(folder)` writes them all and returns what
each should do: be refused with a one-line reason matching `refusal`, or (refusal None) be served safely.

    .venv/bin/python -m tests.hostile_bundles OUT     # writes OUT/<case>/... and lists the cases
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from search.bundle.hnsw_check import HEADER
from search.bundle.hnsw_index import VectorIndex
from search.bundle.store import BundleInfo, write_bundle
from search.config import EncoderSpec, HnswParams
from tests.conftest import DEMO_MODEL_DIR, unit_vectors

COUNT, DIM = 8, 64  # the demo model's dim, so a bundle that passes can be searched with the demo encoder
SECRET = "SECRET-TOKEN-4a1f: nothing outside a bundle may ever be read or served\n"
OLD_TEMP_NAMES = (".manifest.tmp.json", ".embeddings.tmp.npy", ".metadata.tmp.parquet", ".index.tmp.hnsw")


@dataclass(frozen=True, slots=True)
class Case:
    """One crafted bundle and what loading it must do."""

    name: str
    index: Path  # what --index / SEARCH_INDEX names
    refusal: str | None  # regex of the one-line reason; None: it loads and is served safely
    serving: bool = False  # concerns what the app serves (image paths, links, Hub snapshots)
    action: str = "load"  # "load", or "rebuild" (--rebuild-index in place, with planted temp symlinks)
    error: str = "BundleError"  # the SearchError subclass of the refusal


# --- the valid starting point and an attacker's tools ---

def write_valid(root: Path, dim: int = DIM) -> Path:
    """A valid bundle with local thumbnails, https page links, and the demo model as its encoder."""
    (root / "images").mkdir(parents=True)
    for row in range(COUNT):
        Image.new("RGB", (16, 16), (row * 30, 255 - row * 30, 90)).save(root / "images" / f"item-{row}.png")
    table = pa.table({
        "id": [f"item-{row}" for row in range(COUNT)],
        "image": [f"images/item-{row}.png" for row in range(COUNT)],
        "page_url": [f"https://example.com/photo/{row}" for row in range(COUNT)],
        "description": [f"test picture {row}" for row in range(COUNT)],
        "photographer": [f"Person {row}" for row in range(COUNT)],
    })
    info = BundleInfo(EncoderSpec(f"local-dir:{DEMO_MODEL_DIR}", None), HnswParams(8, 32, 16), "hostile-corpus")
    write_bundle(root, unit_vectors(COUNT, dim, seed=dim), table, info)
    return root


def digest(path: Path) -> str | None:
    """sha256 of a file as an attacker computes it (None when this machine cannot read it)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def manifest_of(root: Path) -> dict[str, Any]:
    """The bundle's manifest as JSON."""
    return json.loads((root / "manifest.json").read_text())


def write_manifest(root: Path, manifest: Any) -> None:
    """Replace the manifest (it lists no checksum of itself)."""
    (root / "manifest.json").write_text(json.dumps(manifest))


def reseal(root: Path, extra: dict[str, str] | None = None) -> None:
    """Recompute every listed checksum from the files as they now are (plus `extra` entries), like an attacker."""
    manifest = manifest_of(root)
    files = {**manifest["files"], **(extra or {})}
    resealed = {name: digest(Path(name) if name.startswith("/") else root / name) or old for name, old in files.items()}
    write_manifest(root, {**manifest, "files": resealed})


def edit_manifest(root: Path, **changes: Any) -> None:
    """Change top-level manifest fields."""
    write_manifest(root, {**manifest_of(root), **changes})


def edit_hnsw(root: Path, **changes: Any) -> None:
    """Change manifest.hnsw fields."""
    manifest = manifest_of(root)
    edit_manifest(root, hnsw={**manifest["hnsw"], **changes})


def set_cell(root: Path, column: str, row: int, value: Any) -> None:
    """Rewrite one metadata cell and reseal."""
    table = pq.read_table(root / "metadata.parquet")
    values = table.column(column).to_pylist()
    values[row] = value
    table = table.set_column(table.schema.get_field_index(column), column, pa.array(values, pa.string()))
    pq.write_table(table, root / "metadata.parquet")
    reseal(root)


def set_metadata(root: Path, change: Callable[[pa.Table], pa.Table]) -> None:
    """Rewrite the metadata table and reseal."""
    pq.write_table(change(pq.read_table(root / "metadata.parquet")), root / "metadata.parquet")
    reseal(root)


def repeated(column: str, value: str) -> Callable[[pa.Table], pa.Table]:
    """Every row of `column` holds `value`, dictionary-encoded: stored once, whatever the row count."""
    def change(table: pa.Table) -> pa.Table:
        cells = pa.DictionaryArray.from_arrays(pa.array([0] * len(table), pa.int32()), pa.array([value]))
        return table.set_column(table.schema.get_field_index(column), column, cells)

    return change


def set_embeddings(root: Path, change: Callable[[np.ndarray], np.ndarray]) -> None:
    """Rewrite embeddings.npy (no pickle unless the array needs it) and reseal."""
    array = change(np.load(root / "embeddings.npy"))
    np.save(root / "embeddings.npy", array, allow_pickle=array.dtype.hasobject)
    reseal(root)


def npy_with_header(root: Path, shape: tuple[int, ...], data: bytes) -> None:
    """embeddings.npy whose header declares `shape` (float32) followed by `data`, then reseal."""
    with (root / "embeddings.npy").open("wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False, "shape": shape})
        handle.write(data)
    reseal(root)


def link(path: Path, target: Path | str) -> None:
    """Replace `path` by a symlink to `target`."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    path.symlink_to(target)


# --- the cases: (name, refusal regex or None, serving, action, error), then what to do to a fresh copy ---

Mutation = Callable[[Path, Path], Path | None]  # (bundle copy, the corpus's outside folder) -> index to use
OUTSIDE_IMAGE = "the corpus's outside folder"

IMAGE_REFUSAL = r"metadata.parquet row 0: image must be an http\(s\) URL or a bundle file listed in manifest.json"
PAGE_REFUSAL = r"metadata.parquet row 3: page_url must be an http\(s\) URL or empty"
NOT_A_PICTURE = r"bundle file {} is neither a data file nor a JPEG, PNG, WebP or GIF picture \(by its name\)"
NAME_REFUSAL = r"file \d+ in manifest.json is not a relative path inside the bundle"
NOT_UNIT = r"embeddings.npy has \d+ row\(s\) that are not finite unit vectors"


def _image_and_listed(value: str) -> Mutation:
    def mutate(root: Path, outside: Path) -> None:
        set_cell(root, "image", 0, value)
        reseal(root, {value: "0" * 64})

    return mutate


def _escaping_symlink(root: Path, outside: Path) -> None:
    link(root / "images" / "item-0.png", outside / "secret.txt")
    reseal(root)


def _escaping_images_dir(root: Path, outside: Path) -> None:
    copy = outside / "images-copy"
    if not copy.exists():
        shutil.copytree(root / "images", copy)
    link(root / "images", copy)
    reseal(root)


def _unlisted_inside(root: Path, outside: Path) -> None:
    (root / "notes.txt").write_text("not listed in the manifest, so never verified")
    set_cell(root, "image", 0, "notes.txt")


SCRIPT_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" onload="alert(document.domain)">'
              '<script>fetch("/steal?c=" + document.cookie)</script></svg>')
SCRIPT_HTML = "<html><body><script>fetch('/steal?c=' + document.cookie)</script></body></html>"


def _listed_script_file(name: str, content: str, as_image: bool = True) -> Mutation:
    """A file that runs script when a browser renders it, listed (with its true checksum) and used as item 0's image."""
    def mutate(root: Path, outside: Path) -> None:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
        if as_image:
            set_cell(root, "image", 0, name)
        reseal(root, {name: "0" * 64})

    return mutate


def _script_in_a_jpg(root: Path, outside: Path) -> None:
    """HTML with script under a picture's name: loads (names decide), and is only ever served as image/jpeg."""
    _listed_script_file("images/evil.jpg", SCRIPT_HTML)(root, outside)
    (root / "images" / "unlisted.svg").write_text(SCRIPT_SVG)  # unlisted, beside the pictures: never served


def _outside_manifest(root: Path, outside: Path) -> None:
    target = outside / "manifest-elsewhere.json"
    shutil.copy(root / "manifest.json", target)
    link(root / "manifest.json", target)


def _outside_data_file(root: Path, outside: Path) -> None:
    target = outside / "embeddings-elsewhere.npy"
    shutil.copy(root / "embeddings.npy", target)
    link(root / "embeddings.npy", target)
    reseal(root)


def _listed_link_to_shadow(root: Path, outside: Path) -> None:
    (root / "leak.txt").symlink_to("/etc/shadow")
    reseal(root, {"leak.txt": "0" * 64})


def _huge_manifest(root: Path, outside: Path) -> None:
    with (root / "manifest.json").open("r+b") as handle:
        handle.truncate((64 << 20) + 1)  # sparse: costs no disk, but is over the cap


def _manifest_text(text: str) -> Mutation:
    """manifest.json replaced by `text` (a manifest's fields, spelled as JSON that `json.dumps` would not write)."""
    def mutate(root: Path, outside: Path) -> None:
        (root / "manifest.json").write_text(text.replace("FIELDS", json.dumps(manifest_of(root))[1:-1]))

    return mutate


def _vocab_bytes(data: bytes) -> Mutation:
    """keywords.json replaced by `data`, resealed."""
    def mutate(root: Path, outside: Path) -> None:
        (root / "keywords.json").write_bytes(data)
        reseal(root)

    return mutate


def _vocab_of(items: str) -> bytes:
    return ('{"format": 1, "count": 8, "k1": 1.5, "b": 0.75, "vocab": [' + items + "]}").encode()


def _rows(value: float, rows: slice) -> Callable[[np.ndarray], np.ndarray]:
    def change(array: np.ndarray) -> np.ndarray:
        array[rows] = value if np.isnan(value) or np.isinf(value) else array[rows] * value
        return array

    return change


def _cells_at_their_limits(root: Path, outside: Path) -> None:
    set_cell(root, "description", 1, "é" * 2000)  # characters, not bytes, are counted
    set_cell(root, "page_url", 1, "https://example.com/" + "p" * 2028)


MARKUP_WORDS = ("<script>fetch('/steal?c=' + document.cookie)</script>", '<img src=x onerror="alert(1)">',
                "{{7*7}} ${7*7} [link](javascript:alert(1))")
"""OCR text a hostile bundle may carry in words_in_picture: served only as escaped text."""


def _words_in_picture(values: pa.Array) -> Mutation:
    """The bundle with a words_in_picture column (what build_index.py --ocr writes) of these values."""
    def mutate(root: Path, outside: Path) -> None:
        set_metadata(root, lambda table: table.append_column("words_in_picture", values))

    return mutate


def _encoder_dim_mismatch(root: Path, outside: Path) -> None:
    shutil.rmtree(root)
    write_valid(root, dim=16)


def _hnsw_entry_point_out_of_range(root: Path, outside: Path) -> None:
    data = bytearray((root / "index.hnsw").read_bytes())
    offset = HEADER.fields["entry_point"][1]
    data[offset:offset + 4] = (0x7FFFFFF0).to_bytes(4, "little")  # the patch that segfaulted the first query
    (root / "index.hnsw").write_bytes(bytes(data))
    reseal(root)


def _hnsw_of_another_dim(root: Path, outside: Path) -> None:
    VectorIndex.build(unit_vectors(COUNT, 16), HnswParams(8, 32, 16)).save(root / "index.hnsw")
    reseal(root)


def _plant_temp_links(root: Path, outside: Path) -> None:
    for name in OLD_TEMP_NAMES:
        (root / name).symlink_to(outside / "victim.txt")


def hub_snapshot(cache: Path, base: Path, repo: str = "datasets--evil--bundle") -> Path:
    """`base` laid out as huggingface_hub caches a snapshot: snapshots/REV/NAME are symlinks into blobs/."""
    repo_cache = cache / repo
    snapshot = repo_cache / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    (repo_cache / "blobs").mkdir(parents=True)
    for path in sorted(base.rglob("*")):
        if path.is_file():
            blob = repo_cache / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
            shutil.copyfile(path, blob)
            target = snapshot / path.relative_to(base)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(os.path.relpath(blob, target.parent))
    return snapshot


def _absolute_encoder(root: Path) -> None:
    # The written `local-dir:` is relative to the bundle; a snapshot sits deeper, so name the model absolutely.
    edit_manifest(root, encoder={"model": f"local-dir:{DEMO_MODEL_DIR}", "pretrained": None})


def _hub_valid(root: Path, outside: Path) -> Path:
    _absolute_encoder(root)
    return hub_snapshot(root.parent / f"{root.name}-cache", root)


def _hub_foreign_blob(root: Path, outside: Path) -> Path:
    _absolute_encoder(root)
    cache = root.parent / f"{root.name}-cache"
    snapshot = hub_snapshot(cache, root)
    other = hub_snapshot(cache, root, "datasets--someone--else")
    image = snapshot / "images" / "item-0.png"
    image.unlink()
    image.symlink_to(os.path.realpath(other / "images" / "item-0.png"))  # same bytes, another repo's blobs
    return snapshot


CASES: list[tuple[str, str | None, bool, Mutation]] = [
    # images: only http(s) URLs and files of the bundle itself
    ("image-etc-passwd", IMAGE_REFUSAL, True, lambda r, o: set_cell(r, "image", 0, "/etc/passwd")),
    ("image-proc-environ", IMAGE_REFUSAL, True, lambda r, o: set_cell(r, "image", 0, "/proc/self/environ")),
    ("image-relative-escape", IMAGE_REFUSAL, True, lambda r, o: set_cell(r, "image", 0, "../../../../etc/hostname")),
    ("image-dotdot-through-images", IMAGE_REFUSAL, True,
     lambda r, o: set_cell(r, "image", 0, "images/../../outside/secret.txt")),
    ("image-backslashes", IMAGE_REFUSAL, True, lambda r, o: set_cell(r, "image", 0, "..\\..\\etc\\passwd")),
    ("image-file-url", IMAGE_REFUSAL, True, lambda r, o: set_cell(r, "image", 0, "file:///etc/passwd")),
    ("image-javascript-url", IMAGE_REFUSAL, True, lambda r, o: set_cell(r, "image", 0, "javascript:alert(1)")),
    ("image-null", IMAGE_REFUSAL, True, lambda r, o: set_cell(r, "image", 0, None)),
    ("image-unlisted-file-inside", IMAGE_REFUSAL, True, _unlisted_inside),
    ("image-absolute-and-listed", NAME_REFUSAL, True, _image_and_listed("/etc/passwd")),
    ("image-escape-and-listed", NAME_REFUSAL, True, _image_and_listed("../../../../etc/hostname")),
    ("image-symlink-escaping", r"bundle file images/item-0.png is a link that leads outside the bundle", True,
     _escaping_symlink),
    ("images-folder-symlink-escaping", r"bundle file images/item-\d.png is a link that leads outside the bundle",
     True, _escaping_images_dir),
    # only pictures are ever served from a bundle: files that can run script are refused by name
    ("listed-svg-as-image", NOT_A_PICTURE.format("images/evil.svg"), True,
     _listed_script_file("images/evil.svg", SCRIPT_SVG)),
    ("listed-svg-upper-case", NOT_A_PICTURE.format("images/EVIL.SVG"), True,
     _listed_script_file("images/EVIL.SVG", SCRIPT_SVG)),
    ("listed-html-not-an-image", NOT_A_PICTURE.format("images/evil.html"), True,
     _listed_script_file("images/evil.html", SCRIPT_HTML, as_image=False)),
    ("listed-xhtml-at-the-top", NOT_A_PICTURE.format("evil.xhtml"), True,
     _listed_script_file("evil.xhtml", SCRIPT_HTML, as_image=False)),
    ("listed-picture-without-suffix", NOT_A_PICTURE.format("images/evil"), True,
     _listed_script_file("images/evil", SCRIPT_HTML)),
    ("listed-jpg-holding-script", None, True, _script_in_a_jpg),
    # page links
    ("page-url-javascript", PAGE_REFUSAL, True, lambda r, o: set_cell(r, "page_url", 3, "javascript:alert(1)")),
    ("page-url-data", PAGE_REFUSAL, True,
     lambda r, o: set_cell(r, "page_url", 3, "data:text/html,<script>alert(1)</script>")),
    ("page-url-newline", PAGE_REFUSAL, True,
     lambda r, o: set_cell(r, "page_url", 3, "https://example.com/\njavascript:alert(1)")),
    # manifest file names
    ("name-dotdot", NAME_REFUSAL, False, lambda r, o: reseal(r, {"../../etc/passwd": "0" * 64})),
    ("name-absolute", NAME_REFUSAL, False, lambda r, o: reseal(r, {"/etc/hostname": "0" * 64})),
    ("name-wrong-hash-outside", NAME_REFUSAL, False,
     lambda r, o: edit_manifest(r, files={**manifest_of(r)["files"], "/etc/shadow": "0" * 64})),
    ("name-backslash", NAME_REFUSAL, False, lambda r, o: reseal(r, {"images\\..\\..\\secret.txt": "0" * 64})),
    ("name-symlink-to-shadow", r"bundle file leak.txt is a link that leads outside the bundle", False,
     _listed_link_to_shadow),
    ("manifest-symlink-outside", r"bundle file manifest.json is a link that leads outside the bundle", False,
     _outside_manifest),
    ("data-file-symlink-outside", r"bundle file embeddings.npy is a link that leads outside the bundle", False,
     _outside_data_file),
    # manifest values
    ("manifest-nested", r"manifest.json is nested too deeply", False,
     lambda r, o: (r / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)),
    ("manifest-over-64-mib", r"manifest.json is larger than 64 MiB", False, _huge_manifest),
    ("manifest-not-an-object", r"manifest.json is malformed: the top level is not a JSON object", False,
     lambda r, o: (r / "manifest.json").write_text("[1, 2]")),
    ("manifest-int-of-5000-digits", r"manifest.json is not valid JSON", False,
     lambda r, o: (r / "manifest.json").write_text('{"format_version": 1, "dim": 1' + "0" * 5000 + "}")),
    # JSON sized before it is parsed (search/bundle/bounded_json.py): Python objects cost ~30x the bytes of `{}`
    ("manifest-extra-nested-objects", r"manifest.json is nested too deeply \(more than 3 levels\)", False,
     lambda r, o: edit_manifest(r, extra=[{"a": {}}] * 1000)),
    ("manifest-2m-empty-objects", r"manifest.json holds more than 2097152 values, more than its format needs", False,
     _manifest_text("{FIELDS, \"extra\": [" + "{}," * 2_100_000 + "{}]}")),
    ("manifest-2m-short-strings", r"manifest.json holds more than 2097152 values", False,
     _manifest_text("{FIELDS, \"extra\": [" + '"",' * 2_100_000 + '""]}')),
    ("manifest-duplicate-key", r"manifest.json is not valid JSON \(an object repeats a key\)", False,
     _manifest_text('{FIELDS, "count": 9}')),
    ("manifest-byte-order-mark", r"manifest.json is not valid JSON \(Unexpected UTF-8 BOM", False,
     _manifest_text("\ufeff{FIELDS}")),
    ("manifest-null", r"manifest.json is malformed: the top level is not a JSON object", False,
     lambda r, o: (r / "manifest.json").write_text("null")),
    ("manifest-huge-number", r"dim must be a whole number, not a fraction", False,
     lambda r, o: (r / "manifest.json").write_text(json.dumps(manifest_of(r)).replace('"dim": 64', '"dim": 1e999'))),
    ("manifest-extra-long-string", None, False, lambda r, o: edit_manifest(r, extra="x" * (8 << 20))),
    # the same with one character past U+FFFF: decoded, Python would store it at 4 bytes a character
    ("manifest-extra-long-astral-string", r"manifest.json holds a text longer than its format needs", False,
     lambda r, o: edit_manifest(r, extra="x" * (8 << 20) + "\U0001f600")),
    ("keywords-empty-objects", r"keywords.json is nested too deeply \(more than 2 levels\)", False,
     _vocab_bytes(_vocab_of(",".join(["{}"] * 100_000)))),
    ("keywords-5m-values", r"keywords.json holds more than 5000016 values", False,
     _vocab_bytes(_vocab_of(",".join(["0"] * 5_000_100)))),
    ("keywords-duplicate-key", r"keywords.json is not valid JSON \(an object repeats a key\)", False,
     _vocab_bytes(b'{"format": 1, "count": 8, "k1": 1.5, "b": 0.75, "vocab": ["test"], "vocab": ["test"]}')),
    ("keywords-null", r"keywords.json is not a keyword index: it is not a format 1 object", False,
     _vocab_bytes(b"null")),
    ("ef-search-negative", r"hnsw.ef_search must be from 1 to", False, lambda r, o: edit_hnsw(r, ef_search=-1)),
    ("ef-search-boolean", r"hnsw.ef_search must be a whole number, not a boolean", False,
     lambda r, o: edit_hnsw(r, ef_search=True)),
    ("m-fraction", r"hnsw.m must be a whole number, not a fraction", False, lambda r, o: edit_hnsw(r, m=16.5)),
    ("count-huge", r"count must be from 0 to 50000000", False, lambda r, o: edit_manifest(r, count=10**12)),
    ("dim-huge", r"dim must be from 1 to 8192", False, lambda r, o: edit_manifest(r, dim=10**9)),
    ("dim-string", r"dim must be a whole number, not a string", False, lambda r, o: edit_manifest(r, dim="64")),
    ("format-version-boolean", r"format_version a boolean is not supported", False,
     lambda r, o: edit_manifest(r, format_version=True)),
    ("encoder-not-an-object", r"encoder is not a JSON object", False,
     lambda r, o: edit_manifest(r, encoder=["ViT-B-32"])),
    ("files-not-an-object", r"files must be an object", False,
     lambda r, o: edit_manifest(r, files=list(manifest_of(r)["files"]))),
    ("checksum-not-hex", r"the sha256 of index.hnsw is not 64 lowercase hex digits", False,
     lambda r, o: edit_manifest(r, files={**manifest_of(r)["files"], "index.hnsw": "<b>x</b>"})),
    ("ui-sample-unknown-id", r"manifest.json ui.sample names an item that is not in the bundle", False,
     lambda r, o: edit_manifest(r, ui={"examples": [], "sample": ["item-1", "<img src=x onerror=alert(1)>"]})),
    ("ui-sample-not-ids", r"ui.sample must be a list of at most 48 distinct item ids", False,
     lambda r, o: edit_manifest(r, ui={"examples": [], "sample": ["item-1", "item-1", 2]})),
    # embeddings
    ("npy-header-71-gib", r"embeddings.npy holds float32 \(297795584, 64\), expected float32 \(8, 64\)", False,
     lambda r, o: npy_with_header(r, (297_795_584, 64), b"\0" * 64)),
    ("npy-header-76-gib-manifest-agrees", r"embeddings.npy has 64 bytes of data, not the 81920000000", False,
     lambda r, o: (npy_with_header(r, (40_000_000, 512), b"\0" * 64),
                   edit_manifest(r, count=40_000_000, dim=512))),
    ("npy-truncated", r"embeddings.npy has 100 bytes of data, not the 2048", False,
     lambda r, o: npy_with_header(r, (COUNT, DIM), b"\0" * 100)),
    ("npy-fortran-order", r"in Fortran order", False, lambda r, o: set_embeddings(r, np.asfortranarray)),
    ("npy-float64", r"embeddings.npy holds float64 \(8, 64\)", False,
     lambda r, o: set_embeddings(r, lambda a: a.astype(np.float64))),
    ("npy-big-endian", r"big-endian", False, lambda r, o: set_embeddings(r, lambda a: a.astype(">f4"))),
    ("npy-pickle", r"embeddings.npy is not a plain .npy array \(it needs pickle", False,
     lambda r, o: set_embeddings(r, lambda a: np.array([{"evil": 1}], dtype=object))),
    ("nan-rows", NOT_UNIT, False, lambda r, o: set_embeddings(r, _rows(np.nan, slice(2, 5)))),
    ("inf-row", NOT_UNIT, False, lambda r, o: set_embeddings(r, _rows(np.inf, slice(7, 8)))),
    ("rows-not-unit", NOT_UNIT, False, lambda r, o: set_embeddings(r, _rows(2.0, slice(0, 8)))),
    ("manifest-dim-disagrees", r"embeddings.npy holds float32 \(8, 64\), expected float32 \(8, 32\)", False,
     lambda r, o: edit_manifest(r, dim=32)),
    ("encoder-dim-disagrees", r"makes 64-d vectors but index .* holds 16-d ones", False, _encoder_dim_mismatch),
    # metadata
    ("duplicate-ids", r"metadata.parquet has duplicate ids", False, lambda r, o: set_cell(r, "id", 5, "item-1")),
    ("id-not-utf-8", r"metadata.parquet holds text that is not valid UTF-8", False,
     lambda r, o: set_metadata(r, lambda t: t.set_column(0, "id", pa.array(
         [f"item-{n}".encode() + (b"\xff" if n == 7 else b"") for n in range(COUNT)], pa.binary()).view(pa.string())))),
    ("null-id", r"metadata.parquet row 2 has no id", False, lambda r, o: set_cell(r, "id", 2, None)),
    ("description-not-text", r"column description holds int64, not text", False,
     lambda r, o: set_metadata(r, lambda t: t.set_column(3, "description", [list(range(COUNT))]))),
    ("metadata-extra-row", r"manifest count 8, metadata 9 rows", False,
     lambda r, o: set_metadata(r, lambda t: pa.concat_tables([t, t.slice(0, 1)]))),
    ("metadata-column-missing", r"metadata.parquet lacks column\(s\) page_url", False,
     lambda r, o: set_metadata(r, lambda t: t.drop_columns(["page_url"]))),
    ("metadata-dictionary-bomb", r"metadata.parquet column description row 0 holds 262144 characters, more than "
     r"the 2000 allowed", False, lambda r, o: set_metadata(r, repeated("description", "A" * (256 << 10)))),
    ("metadata-long-photographer", r"metadata.parquet column photographer row 4 holds 2001 characters, more than "
     r"the 2000 allowed", False, lambda r, o: set_cell(r, "photographer", 4, "P" * 2001)),
    ("metadata-long-page-url", r"metadata.parquet row 2: page_url must be an http\(s\) URL or empty", True,
     lambda r, o: set_cell(r, "page_url", 2, "https://example.com/" + "p" * 2029)),  # 2049 characters
    ("metadata-huge-image-url", r"metadata.parquet column image row 5 holds 1048596 characters, more than the "
     r"8192 allowed", True, lambda r, o: set_cell(r, "image", 5, "https://example.com/" + "i" * (1 << 20))),
    ("metadata-cells-at-their-limits", None, False, _cells_at_their_limits),
    # words_in_picture (OCR text): bounded text, and markup in it is shown as text
    ("words-in-picture-too-long", r"metadata.parquet column words_in_picture row 2 holds 501 characters, more than "
     r"the 500 allowed", False,
     _words_in_picture(pa.array(["COFFEE", None, "W" * 501, *[""] * (COUNT - 3)], pa.string()))),
    ("words-in-picture-not-text", r"metadata.parquet column words_in_picture holds int64, not text values", False,
     _words_in_picture(pa.array(range(COUNT), pa.int64()))),
    ("words-in-picture-nested", r"metadata.parquet column 'words_in_picture' is nested", False,
     _words_in_picture(pa.array([["a" * 400] * 100] * COUNT, pa.list_(pa.string())))),
    ("words-in-picture-markup", None, True,
     _words_in_picture(pa.array([*MARKUP_WORDS, *[None] * (COUNT - len(MARKUP_WORDS))], pa.string()))),
    ("metadata-not-parquet", r"metadata.parquet cannot be read as parquet", False,
     lambda r, o: ((r / "metadata.parquet").write_bytes(b"PAR1" + os.urandom(64)), reseal(r))),
    # index.hnsw (the structural check is search/bundle/hnsw_check.py; its own cases and fuzz: tests/test_hnsw_check.py)
    ("hnsw-entry-point-out-of-range", r"index.hnsw is corrupt .*entry point 2147483632", False,
     _hnsw_entry_point_out_of_range),
    ("hnsw-of-another-dim", r"index.hnsw is corrupt .*vectors of dim 16, expected 64", False, _hnsw_of_another_dim),
    # writes: a rebuild in place never writes through a symlink planted at a temp name
    ("rebuild-with-planted-temp-links", None, False, _plant_temp_links),
    # Hub snapshots: images/* are symlinks into the repo cache's blobs/
    ("hub-snapshot", None, True, _hub_valid),
    ("hub-snapshot-foreign-blob", r"bundle file images/item-0.png is a link that leads outside the bundle", True,
     _hub_foreign_blob),
]
ERRORS = {"encoder-dim-disagrees": "EncoderMismatchError"}
ACTIONS = {"rebuild-with-planted-temp-links": "rebuild"}


def write_corpus(folder: Path) -> list[Case]:
    """Write every case under `folder` (plus `_base`, the valid original, and `outside/`); return the cases."""
    outside = folder / "outside"
    outside.mkdir(parents=True)
    (outside / "secret.txt").write_text(SECRET)
    (outside / "victim.txt").write_text(SECRET)
    base = write_valid(folder / "_base")
    cases = []
    for name, refusal, serving, mutate in CASES:
        root = shutil.copytree(base, folder / name, symlinks=True)
        index = mutate(root, outside)
        cases.append(Case(name, index if isinstance(index, Path) else root, refusal, serving,
                          ACTIONS.get(name, "load"), ERRORS.get(name, "BundleError")))
    return cases


if __name__ == "__main__":
    if len(sys.argv) != 2 or Path(sys.argv[1]).exists():
        sys.exit("usage: python -m tests.hostile_bundles NEW_FOLDER")
    for case in write_corpus(Path(sys.argv[1])):
        print(f"{case.name:36} {case.index}  {'refused: ' + case.refusal if case.refusal else 'served safely'}")
