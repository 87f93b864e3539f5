"""Masked-LM adaptation of the compliance encoder (nlu/compliance/adapt.py): a few real steps on the released ALBERT-sim
move its masked-LM loss while the keep term holds its sentence vectors; the result loads as an encoder and says what
it was built from; e5-small (no masked-LM head) is refused with a reason; the service serves the adapted encoder only
when it was built from the base and settings asked for."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from knowledge_base.errors import CallbotError
from nlu.compliance.adapt import AdaptConfig, adapt_encoder, adaptable
from nlu.compliance.service import adapted_is_current, weights_sha256
from nlu.encoders.sentence_encoder import SentenceEncoder

SALES_TALK = [
    "这款产品历史业绩不错，但过去不代表未来。", "您放心，本金肯定是安全的。", "嗯，我这边帮您查一下申购额度。",
    "今天不买明天就没额度了哦。", "这个基金风险等级是R3，适合稳健型投资者。", "亏了算我的，您只管买。",
    "请您不要把验证码告诉任何人。", "别家券商的手续费都是坑人的。", "新股中签后请在截止日前缴款。",
    "老师傅讲，这票下礼拜肯定拉升。", "市场有风险，投资需谨慎。", "跟存定期一样稳当，您就当存银行。",
]


@pytest.fixture(scope="module")
def release_dir(e5_model_dir: Path) -> Path:
    from callbot.settings import get_settings

    path = get_settings().models_dir / "albert-sim-release"
    if not (path / "model.safetensors").is_file():
        pytest.fail(f"{path} is not installed: run `callbot model base` (make prepare) before the tests")
    return path


def test_a_few_masked_lm_steps_keep_the_sentence_vectors_and_record_their_origin(release_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "adapted"
    key = {"parent_sha256": weights_sha256(release_dir), "steps": 6, "keep_weight": 1.0}
    import torch

    threads = torch.get_num_threads()
    figures = adapt_encoder(release_dir, out, SALES_TALK * 4, AdaptConfig(steps=6, batch_size=8, threads=threads % 2 + 1),
                            key=key, progress=False)
    assert torch.get_num_threads() == threads  # the process's thread count is left as it was
    assert figures["sentences"] == len(SALES_TALK)  # repeated lines count once
    before = SentenceEncoder(release_dir).encode(SALES_TALK)
    after = SentenceEncoder(out).encode(SALES_TALK)
    cos = (before * after).sum(1)
    assert cos.min() > 0.9, cos  # the keep term holds the vectors the head reads
    assert not np.allclose(before, after)  # yet the weights did move
    meta = json.loads((out / "callbot_encoder.json").read_text())
    assert meta["parent"] == "albert-sim-release" and meta["stage"] == "compliance-mlm"
    assert meta["compliance_adaptation"]["config"]["steps"] == 6
    assert adapted_is_current(out, key)
    assert not adapted_is_current(out, {**key, "steps": 600})  # other settings: build it again
    assert not adapted_is_current(out, {**key, "parent_sha256": "0" * 64})  # another release underneath
    assert not (tmp_path / "adapted.partial").exists()


def test_an_encoder_without_a_masked_lm_head_is_refused_with_the_reason(e5_model_dir: Path, tmp_path: Path) -> None:
    assert not adaptable(e5_model_dir)
    with pytest.raises(CallbotError, match="ALBERT-sim"):
        adapt_encoder(e5_model_dir, tmp_path / "x", SALES_TALK * 4, AdaptConfig(steps=1, batch_size=8), progress=False)
    assert not (tmp_path / "x").exists()


def test_too_few_sentences_is_a_clear_error(release_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CallbotError, match="at least 32 sentences"):
        adapt_encoder(release_dir, tmp_path / "x", SALES_TALK, AdaptConfig(steps=1), progress=False)


def test_a_half_written_or_foreign_directory_is_not_current(release_dir: Path, tmp_path: Path) -> None:
    key = {"parent_sha256": weights_sha256(release_dir), "steps": 600, "keep_weight": 1.0}
    assert not adapted_is_current(tmp_path / "missing", key)
    copy = tmp_path / "copy"
    shutil.copytree(release_dir, copy)  # the release itself: no adaptation recorded
    assert not adapted_is_current(copy, key)
