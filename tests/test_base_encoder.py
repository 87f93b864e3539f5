"""The default encoder: built offline from PyPI packages, verified, idempotent, and loud when broken."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nlu.encoders.e5_builder import VERIFY_COSINE, VERIFY_PAIR
from nlu.encoders.sentence_encoder import ModelFilesMissing, SentenceEncoder
from nlu.model_cache import verify_encoder

ROOT = Path(__file__).resolve().parent.parent


def test_e5_reproduces_the_reference_similarity(e5_model_dir: Path) -> None:
    assert round(verify_encoder(e5_model_dir), 3) == VERIFY_COSINE
    enc = SentenceEncoder(e5_model_dir)
    vecs = enc.encode([VERIFY_PAIR[0], VERIFY_PAIR[1], "今天天气很好", ""])
    assert vecs.shape == (4, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    # A paraphrase is closer than an unrelated sentence (the band is compressed, the order is not).
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.03


def test_model_base_command_is_idempotent(e5_model_dir: Path) -> None:
    env = {**os.environ}
    result = subprocess.run([str(Path(sys.executable).parent / "callbot"), "model", "base"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "already built and verified" in result.stdout


def test_incomplete_model_directory_is_named(e5_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(e5_model_dir, broken)
    (broken / "tokenizer.json").unlink()
    with pytest.raises(ModelFilesMissing, match="missing tokenizer.json"):
        SentenceEncoder(broken)
