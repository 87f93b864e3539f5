"""The released ALBERT-sim: committed under ``models/``, installed into the model cache on every machine.

Rebuilding the encoder takes about an hour of CPU, which no new user will spend before trying the product,
so one release ships with the repository (at most 25 MB: float16 weights, the tokenizer, its calibrated
thresholds, its measurements and a model card). ``callbot model base`` (and so ``make demo``) copies it
into ``~/.cache/callbot/models/`` next to e5-small after checking every file against ``SHA256SUMS``;
`auto` then serves it exactly as if it had been trained here. ``callbot model release`` builds a new one
and replaces the old (one release in the tree, never several).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from knowledge_base.errors import CallbotError

# The repository's models/ folder; CALLBOT_RELEASE_DIR points elsewhere (tests, a firm's own release).
RELEASE_DIR = Path(os.environ.get("CALLBOT_RELEASE_DIR") or Path(__file__).resolve().parent.parent / "models")
RELEASE_NAME = "albert-sim-release"  # its directory under models/ and in the cache
SUMS = "SHA256SUMS"
MAX_RELEASE_BYTES = 25 * 1024 * 1024
# What a release holds: the files an encoder needs, its decision rule and measurements, and its card.
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "callbot_encoder.json")
RECORD_FILES = ("thresholds.json", "verified.json", "verified.int8.json", "expansion.json")
CARD = "MODEL_CARD.md"


class ReleaseDamaged(CallbotError):
    pass


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_sums(release: Path) -> dict[str, str]:
    sums_file = release / SUMS
    if not sums_file.is_file():
        raise ReleaseDamaged(f"{sums_file} is missing: the released model cannot be checked. "
                             "Restore it with `git checkout models/`, or build a new release with `callbot model release`.")
    sums: dict[str, str] = {}
    for n, line in enumerate(sums_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64:
            raise ReleaseDamaged(f"{sums_file}:{n}: expected '<sha256>  <file name>', got {line[:80]!r}.")
        sums[parts[1]] = parts[0]
    return sums


def check_release(release: Path = RELEASE_DIR / RELEASE_NAME) -> dict[str, str]:
    """Every file listed in SHA256SUMS is present and intact; returns the sums."""
    sums = read_sums(release)
    for name in MODEL_FILES:
        if name not in sums:
            raise ReleaseDamaged(f"{release / SUMS} does not list {name}; rebuild the release with `callbot model release`.")
    for name, expected in sums.items():
        path = release / name
        if not path.is_file():
            raise ReleaseDamaged(f"{path} is missing. Restore it with `git checkout models/`.")
        with path.open("rb") as f:
            head = f.read(64)
        if head.startswith(b"version https://git-lfs"):
            raise ReleaseDamaged(f"{path} is a Git LFS pointer, not the file: the release is committed as plain files; "
                                 "clone without LFS filters or run `git lfs pull`.")
        got = sha256(path)
        if got != expected:
            raise ReleaseDamaged(f"{path} does not match {SUMS} (expected {expected[:12]}…, got {got[:12]}…): the file is "
                                 "damaged or was replaced by hand. Restore it with `git checkout models/` or rebuild it with "
                                 "`callbot model release`.")
    return sums


def install_release(models_dir: Path, release: Path = RELEASE_DIR / RELEASE_NAME) -> Path | None:
    """Copy the released model into the cache (idempotent: only files whose checksum differs are copied).
    Returns the installed directory, or None when the repository carries no release.

    Weights always follow the repository. A record (thresholds, verified.json) re-measured in the cache after
    the last install (`callbot model verify`) is kept while the repository's copy is the one installed then:
    re-installing the same release must not undo a local measurement, but a newer committed record wins."""
    if not release.is_dir() or not any(release.iterdir()):
        return None
    sums = check_release(release)
    target = models_dir / release.name
    target.mkdir(parents=True, exist_ok=True)
    installed_before = _installed_sums(target)
    for name, expected in sums.items():
        dest = target / name
        if dest.is_file() and sha256(dest) == expected:
            continue
        if name in RECORD_FILES and dest.is_file() and installed_before.get(name) == expected:
            continue  # re-measured here since this same record was installed
        tmp = dest.with_suffix(dest.suffix + ".part")
        shutil.copyfile(release / name, tmp)
        tmp.replace(dest)
    # Files a previous release had and this one has not (e.g. expansion.json) must not outlive it.
    for stale in target.iterdir():
        if stale.is_file() and stale.name not in sums and stale.name in (*MODEL_FILES, *RECORD_FILES, CARD):
            stale.unlink()
    (target / "release.json").write_text(json.dumps({"source": str(release), "files": sums}, indent=2))
    return target


def _installed_sums(target: Path) -> dict[str, str]:
    try:
        return dict(json.loads((target / "release.json").read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def export_release(model_dir: Path, release: Path = RELEASE_DIR / RELEASE_NAME, card: str = "") -> Path:
    """Write ``model_dir`` as the release: float16 weights, the records beside them, the card, SHA256SUMS.
    The old release is replaced whole (staged beside it, then swapped)."""
    import torch
    from safetensors.torch import load_file, save_file

    staging = release.with_name(release.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    tensors = load_file(str(model_dir / "model.safetensors"))
    half = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    save_file(half, str(staging / "model.safetensors"), metadata={"format": "pt"})
    for name in MODEL_FILES + RECORD_FILES:
        if name != "model.safetensors" and (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, staging / name)
    meta = json.loads((staging / "callbot_encoder.json").read_text())
    meta.update({"name": release.name, "released_from": model_dir.name, "weights_dtype": "float16"})
    (staging / "callbot_encoder.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2))
    if card:
        (staging / CARD).write_text(card, encoding="utf-8")
    files = sorted(p.name for p in staging.iterdir() if p.is_file())
    (staging / SUMS).write_text("".join(f"{sha256(staging / n)}  {n}\n" for n in files))
    size = sum(p.stat().st_size for p in staging.iterdir())
    if size > MAX_RELEASE_BYTES:
        shutil.rmtree(staging)
        raise CallbotError(f"The release would take {size / 2**20:.1f} MB; at most {MAX_RELEASE_BYTES / 2**20:.0f} MB "
                           "may be committed. Build a smaller shape (fewer groups, narrower feed-forward).")
    shutil.rmtree(release, ignore_errors=True)
    staging.replace(release)
    return release
