"""The released ALBERT-sim: exported as float16 with checksums, installed into the cache, served by `auto`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from knowledge_base.errors import CallbotError
from nlu import release
from nlu.albert.build import AlbertSimShape, build_initial


@pytest.fixture(scope="module")
def tiny_model(e5_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nlu.data.corpora import package_sentences, sample
    from nlu.encoders.sentence_encoder import SentenceEncoder

    sentences = sample(package_sentences(max_chars=20), 48, seed=4)
    teacher = SentenceEncoder(e5_model_dir).encode(sentences[:16])
    out = tmp_path_factory.mktemp("rel") / "albert-sim-tiny"
    build_initial(e5_model_dir, out, sentences, sentences[:16], teacher,
                  AlbertSimShape(embedding_size=32, num_hidden_layers=2, intermediate_size=128))
    (out / "thresholds.json").write_text(json.dumps({"fallback": 0.7, "ambiguous_margin": 0.01, "temperature": 0.02}))
    return out


def test_export_then_install_gives_the_same_encoder(tiny_model: Path, tmp_path: Path) -> None:
    from nlu.encoders.sentence_encoder import SentenceEncoder

    shipped = release.export_release(tiny_model, tmp_path / "models" / release.RELEASE_NAME, card="# card\n")
    sums = release.check_release(shipped)
    assert set(release.MODEL_FILES) | {"thresholds.json", release.CARD} <= set(sums)
    assert (shipped / "model.safetensors").stat().st_size < (tiny_model / "model.safetensors").stat().st_size * 0.6, "float16"
    cache = tmp_path / "cache"
    installed = release.install_release(cache, shipped)
    assert installed == cache / release.RELEASE_NAME
    texts = ["怎么开立证券账户", "我现在不方便", "今天天气不错"]
    a, b = SentenceEncoder(tiny_model).encode(texts), SentenceEncoder(installed).encode(texts)
    assert float(np.min(np.sum(a * b, axis=1))) > 0.99, "float16 storage barely moves the vectors"
    assert json.loads((installed / "callbot_encoder.json").read_text())["name"] == release.RELEASE_NAME
    # Installing again copies nothing: the files' checksums already match.
    stamp = (installed / "model.safetensors").stat().st_mtime_ns
    release.install_release(cache, shipped)
    assert (installed / "model.safetensors").stat().st_mtime_ns == stamp


def test_a_local_re_measurement_survives_a_reinstall_until_the_repository_changes_it(tiny_model: Path,
                                                                                     tmp_path: Path) -> None:
    shipped = release.export_release(tiny_model, tmp_path / "models" / release.RELEASE_NAME)
    cache = tmp_path / "cache"
    installed = release.install_release(cache, shipped)
    assert installed is not None
    # `callbot model verify` re-calibrates in the cache; the same release installed again must keep that.
    local = {"fallback": 0.61, "ambiguous_margin": 0.02, "temperature": 0.03}
    (installed / "thresholds.json").write_text(json.dumps(local))
    (installed / "config.json").write_text("{}")  # weights and config always follow the repository
    release.install_release(cache, shipped)
    assert json.loads((installed / "thresholds.json").read_text()) == local
    assert (installed / "config.json").read_text() != "{}"
    # A newer committed record wins over the local one.
    committed = {"fallback": 0.66, "ambiguous_margin": 0.03, "temperature": 0.03}
    (shipped / "thresholds.json").write_text(json.dumps(committed))
    sums = (shipped / release.SUMS).read_text().splitlines()
    (shipped / release.SUMS).write_text("".join(
        (f"{release.sha256(shipped / 'thresholds.json')}  thresholds.json" if line.endswith("  thresholds.json") else line)
        + "\n" for line in sums))
    release.install_release(cache, shipped)
    assert json.loads((installed / "thresholds.json").read_text()) == committed


def test_a_damaged_release_is_refused_with_the_fix(tiny_model: Path, tmp_path: Path) -> None:
    shipped = release.export_release(tiny_model, tmp_path / release.RELEASE_NAME)
    weights = shipped / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(release.ReleaseDamaged, match=r"does not match SHA256SUMS.*git checkout models/"):
        release.install_release(tmp_path / "cache", shipped)
    assert not (tmp_path / "cache" / release.RELEASE_NAME / "model.safetensors").exists(), "nothing half-installed"
    weights.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 1\n")
    with pytest.raises(release.ReleaseDamaged, match="Git LFS pointer"):
        release.check_release(shipped)
    (shipped / release.SUMS).write_text("not a checksum line\n")
    with pytest.raises(release.ReleaseDamaged, match=r"SHA256SUMS:1: expected"):
        release.check_release(shipped)
    (shipped / release.SUMS).unlink()
    with pytest.raises(release.ReleaseDamaged, match="SHA256SUMS is missing"):
        release.check_release(shipped)
    assert release.install_release(tmp_path / "cache", tmp_path / "no-release-here") is None


def test_a_release_over_the_size_limit_is_refused_and_the_old_one_kept(tiny_model: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / release.RELEASE_NAME
    release.export_release(tiny_model, target, card="old")
    monkeypatch.setattr(release, "MAX_RELEASE_BYTES", 1024)
    with pytest.raises(CallbotError, match="at most"):
        release.export_release(tiny_model, target, card="new")
    assert (target / release.CARD).read_text() == "old" and not target.with_name(target.name + ".staging").exists()


def test_auto_serves_the_installed_release_when_it_measured_better(tiny_model: Path, tmp_path: Path) -> None:
    from nlu.data.kb_split import SPLIT_ID
    from nlu.model_cache import e5_dir, resolve_model

    models = tmp_path / "models"
    e5 = e5_dir(models)
    e5.mkdir(parents=True)
    (e5 / "verified.json").write_text("{}")
    shipped = tmp_path / "tree" / release.RELEASE_NAME
    release.export_release(tiny_model, shipped)
    intents = ["faq/faq_open_account", "ipo_allotment_notice/affirm"]
    (shipped / "verified.json").write_text(json.dumps({"quality": {"kb_heldout_top1": 0.8}, "better_than_e5": True,
                                                       "kb_split": SPLIT_ID, "kb_heldout_seen": False, "kb_intents": intents}))
    os.remove(shipped / release.SUMS)
    files = sorted(p.name for p in shipped.iterdir())
    (shipped / release.SUMS).write_text("".join(f"{release.sha256(shipped / n)}  {n}\n" for n in files))
    assert resolve_model(models, "auto", intents) == e5, "before installing: e5-small"
    release.install_release(models, shipped)
    assert resolve_model(models, "auto", intents) == models / release.RELEASE_NAME
    assert resolve_model(models, "auto", ["faq/other"]) == e5, "measured on another knowledge base: e5-small"


def test_model_base_installs_a_release_next_to_e5(tiny_model: Path, e5_model_dir: Path, tmp_path: Path) -> None:
    """What `make demo` does on a fresh clone with a release in models/ (here a tiny one, via CALLBOT_RELEASE_DIR)."""
    import subprocess
    import sys

    tree = tmp_path / "tree"
    shipped = release.export_release(tiny_model, tree / release.RELEASE_NAME, card="# card\n")
    callbot = str(Path(sys.executable).parent / "callbot")
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    shutil.copytree(e5_model_dir, cache / "models" / e5_model_dir.name)  # e5 is built already: only the release is new
    env = {**os.environ, "CALLBOT_CACHE_DIR": str(cache), "CALLBOT_HOME": str(tmp_path / "home"), "CALLBOT_RELEASE_DIR": str(tree)}
    done = subprocess.run([callbot, "model", "base"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Released ALBERT-sim installed" in done.stdout
    installed = cache / "models" / release.RELEASE_NAME
    assert release.sha256(installed / "model.safetensors") == release.read_sums(shipped)["model.safetensors"]
    # A damaged release stops the install with the fix, not a traceback.
    (shipped / "tokenizer.json").write_text("{}")
    broken = subprocess.run([callbot, "model", "base"], env=env, capture_output=True, text=True, timeout=300)
    assert broken.returncode != 0 and "git checkout models/" in broken.stderr + broken.stdout
    assert "Traceback" not in broken.stderr


def test_a_candidates_measurement_is_reused_only_while_weights_kb_and_sets_are_unchanged(
        tiny_model: Path, tmp_path: Path, kb, demo_file: Path) -> None:  # type: ignore[no-untyped-def]
    from callbot.release_cli import measured_candidate
    from nlu.model_quality import eval_sets_digest

    kb.import_files([demo_file])
    candidate = release.export_release(tiny_model, tmp_path / "albert-sim-candidate")
    report = {"verdict": {"better": True}, "eval_sets": eval_sets_digest(), "kb_intents": kb.store.intent_keys(),
              "kb_version": kb.store.kb_version(), "better_than_e5": True}
    (candidate / "verified.json").write_text(json.dumps(report))
    (candidate / "verified.int8.json").write_text(json.dumps({**report, "quantize": "int8"}))
    (candidate / "release_run.json").write_text(json.dumps({"seconds": {"verify": 600.0}}))
    reused = measured_candidate(tiny_model, candidate, kb.store)
    assert reused is not None and reused[0]["better_than_e5"] and reused[1]["quantize"] == "int8" and reused[2] == 600.0
    # other weights (a retrained stage) are measured again
    other = tmp_path / "albert-sim-other"
    shutil.copytree(tiny_model, other)
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(other / "model.safetensors"))
    first = next(iter(tensors))
    tensors[first] = tensors[first] + 0.01
    save_file(tensors, str(other / "model.safetensors"))
    assert measured_candidate(other, candidate, kb.store) is None
    # so is the same model after a KB edit or with another held-out set
    kb.add_question(kb.intents("faq")[0]["id"], "这是测评后新加的问法吗", "test")
    assert measured_candidate(tiny_model, candidate, kb.store) is None
    (candidate / "verified.json").write_text(json.dumps({**report, "kb_version": kb.store.kb_version(), "eval_sets": "0" * 16}))
    assert measured_candidate(tiny_model, candidate, kb.store) is None


def test_blend_mixes_two_checkpoints_and_refuses_strangers(tiny_model: Path, tmp_path: Path) -> None:
    """The recipe's last training step (WiSE-FT): weights are the stated mix of the pair stage and the KB stage."""
    import subprocess
    import sys

    from safetensors.torch import load_file, save_file

    callbot = [str(Path(sys.executable).parent / "callbot")]
    tuned = tmp_path / "tuned"
    shutil.copytree(tiny_model, tuned)
    weights = load_file(str(tuned / "model.safetensors"))
    moved = {k: (v + 1.0 if v.is_floating_point() else v) for k, v in weights.items()}
    save_file(moved, str(tuned / "model.safetensors"), metadata={"format": "pt"})
    env = {**os.environ, "CALLBOT_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run([*callbot, "model", "blend", str(tiny_model), str(tuned), "--alpha", "0.75", "--name", "mix"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    mix_dir = tmp_path / "cache" / "models" / "mix"
    mixed = load_file(str(mix_dir / "model.safetensors"))
    key = next(k for k, v in weights.items() if v.is_floating_point())
    assert np.allclose(mixed[key].float().numpy(), weights[key].float().numpy() + 0.75, atol=1e-3)
    meta = json.loads((mix_dir / "callbot_encoder.json").read_text())
    assert meta["soup"] == {"start": tiny_model.name, "tuned": "tuned", "alpha": 0.75}
    assert not (mix_dir / "thresholds.json").exists(), "a blend is calibrated afresh, never with a parent's thresholds"

    other = tmp_path / "other"
    shutil.copytree(tiny_model, other)
    save_file({k: v[..., :1].contiguous() if v.dim() else v for k, v in weights.items()}, str(other / "model.safetensors"))
    result = subprocess.run([*callbot, "model", "blend", str(tiny_model), str(other), "--name", "bad"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "different shapes" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_the_committed_release_is_what_auto_serves_on_the_demo_knowledge_base(tmp_path: Path, kb, demo_file: Path) -> None:  # type: ignore[no-untyped-def]
    """The shipped reports, as a fresh clone installs them: `auto` resolves to the release on the demo KB (an int8
    or float32 verdict that met the rule, a current split, measured on this KB's intents), never to e5-small."""
    from nlu.model_cache import quantization_for, resolve_model

    shipped = Path(__file__).resolve().parents[1] / "models" / release.RELEASE_NAME
    models = tmp_path / "models"
    (models / "e5-small-v1").mkdir(parents=True)
    (models / "e5-small-v1" / "verified.json").write_text("{}")
    installed = models / release.RELEASE_NAME
    installed.mkdir()
    for name in ("verified.json", "verified.int8.json", "callbot_encoder.json"):
        if (shipped / name).is_file():
            shutil.copy(shipped / name, installed / name)
    kb.import_files([demo_file])
    assert resolve_model(models, "auto", kb.store.intent_keys()) == installed
    assert quantization_for(installed, "auto") in ("int8", "none")


def test_refresh_takes_the_largest_blend_share_that_keeps_general_paraphrase_skill() -> None:
    from callbot.refresh_cli import choose_alpha, parse_alphas

    assert parse_alphas("0.5, 0.25,0.375,0.25") == [0.25, 0.375, 0.5]
    for bad in ("", "0", "1.5", "a,b"):
        with pytest.raises(CallbotError, match="--alphas"):
            parse_alphas(bad)
    ok = {"lcqmc": {"ok": True}, "bq": {"ok": True}}
    gates = {0.25: ok, 0.375: ok, 0.5: {"lcqmc": {"ok": False}, "bq": {"ok": True}}}
    assert choose_alpha(gates) == 0.375
    assert choose_alpha({0.5: gates[0.5]}) is None


def test_ship_refuses_an_unmeasured_or_failing_candidate_and_ships_a_measured_one(tiny_model: Path, tmp_path: Path) -> None:
    """`callbot model ship NAME`, as staff run it after `model refresh` and `model verify`."""
    import subprocess
    import sys

    from nlu.model_quality import eval_sets_digest

    bindir = Path(sys.executable).parent
    tree, cache = tmp_path / "tree", tmp_path / "cache"
    env = {**os.environ, "CALLBOT_CACHE_DIR": str(cache), "CALLBOT_HOME": str(tmp_path / "home"), "CALLBOT_RELEASE_DIR": str(tree)}
    version = subprocess.run([str(bindir / "python"), "-c", "from callbot.context import get_store; s = get_store(); "
                              "s.migrate(); print(s.kb_version())"], env=env, capture_output=True, text=True, timeout=120)
    assert version.returncode == 0, version.stderr
    candidate = release.export_release(tiny_model, cache / "models" / "albert-sim-refresh-test")

    def ship() -> subprocess.CompletedProcess:
        return subprocess.run([str(bindir / "callbot"), "model", "ship", candidate.name], env=env, capture_output=True,
                              text=True, timeout=300)

    unmeasured = ship()
    assert unmeasured.returncode != 0 and "callbot model verify albert-sim-refresh-test" in unmeasured.stderr + unmeasured.stdout
    assert "Traceback" not in unmeasured.stderr and not (tree / release.RELEASE_NAME).exists()
    record = {"eval_sets": eval_sets_digest(), "kb_version": int(version.stdout.split()[-1]), "better_than_e5": False,
              "quality": {"kb_heldout_top1": 0.9}}
    (candidate / "verified.json").write_text(json.dumps(record))
    (candidate / "verified.int8.json").write_text(json.dumps({**record, "quantize": "int8"}))
    failing = ship()
    assert failing.returncode != 0 and "neither float32 nor int8 meets the shipping rule" in failing.stderr + failing.stdout
    assert not (tree / release.RELEASE_NAME).exists()
    (candidate / "verified.json").write_text(json.dumps({**record, "kb_version": -1, "better_than_e5": True}))
    stale = ship()
    assert stale.returncode != 0 and "measured on KB v-1" in stale.stderr + stale.stdout
    (candidate / "verified.json").write_text(json.dumps({**record, "better_than_e5": True}))
    (candidate / "refresh_run.json").write_text(json.dumps({"source": "albert-sim-release", "kb_version": 7, "alpha": 0.375,
                                                             "gates": {"0.25": {}, "0.375": {}}}))
    shipped = ship()
    assert shipped.returncode == 0, shipped.stderr + shipped.stdout
    out = tree / release.RELEASE_NAME
    assert release.sha256(out / "model.safetensors") == release.sha256(candidate / "model.safetensors")
    card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "callbot model refresh --source albert-sim-rel-blend75 --alphas 0.25,0.375" in card and "LCQMC and BQ" in card
    assert release.sha256(cache / "models" / release.RELEASE_NAME / "model.safetensors") == release.read_sums(out)["model.safetensors"]


def test_the_refresh_gate_compares_general_paraphrase_skill_with_e5_on_the_same_pairs(tiny_model: Path, e5_model_dir: Path) -> None:
    from callbot.refresh_cli import general_gate
    from nlu.data.corpora import Pair
    from nlu.encoders.sentence_encoder import SentenceEncoder
    from nlu.similarity_eval import encoder_scores

    pairs = [Pair("怎么开户", "如何开户", 1), Pair("怎么开户", "今天天气不错", 0), Pair("手续费多少", "佣金是多少", 1),
             Pair("手续费多少", "我要投诉", 0), Pair("密码忘了", "忘记密码怎么办", 1), Pair("密码忘了", "股票涨了", 0),
             Pair("什么时候到账", "多久能到账", 1), Pair("什么时候到账", "你是谁", 0)]
    dev = {"lcqmc": pairs}
    e5 = {"lcqmc": encoder_scores(SentenceEncoder(e5_model_dir), pairs)}
    same = general_gate(e5_model_dir, e5, dev)["lcqmc"]
    assert same["ok"] and same["mine"] == same["e5"] and same["allowed"] == 0.0
    tiny = general_gate(tiny_model, e5, dev)["lcqmc"]
    assert tiny["e5"] == same["e5"] and tiny["allowed"] >= 0.0 and tiny["ok"] == (tiny["mine"] >= tiny["e5"] - tiny["allowed"] - 1e-9)
