"""The complaint classifier (issue 19): its losses and label graph, training a small model on the product's
complaint data, and the `callbot complaint` commands on good and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from nlu.complaints import graph as label_graph
from nlu.complaints.classifier import ComplaintModel
from nlu.complaints.data import MAX_CHARS, Complaint, LabelSet, load_complaints, truncate
from nlu.complaints.service import DATA_DIR
from nlu.complaints.train import TrainConfig, decide
from nlu.losses.asymmetric import asymmetric_loss, multilabel_bce

ROOT = Path(__file__).resolve().parent.parent
CALLBOT = str(Path(sys.executable).parent / "callbot")
# Small and quick: word vectors from a few thousand package sentences, a narrow network.
TINY = {"word_dim": 64, "word_corpus": 4000, "hidden": 48, "epochs": 25, "patience": 5}


def test_asymmetric_loss_ignores_easy_negatives_and_reduces_to_bce() -> None:
    y = torch.tensor([[1.0, 0.0, 0.0]])
    easy = torch.tensor([[2.0, -4.0, -4.0]])  # negatives at p ≈ 0.018, under the 0.05 margin
    hard = torch.tensor([[2.0, 1.0, -4.0]])
    only_positive = -torch.log(torch.sigmoid(torch.tensor(2.0)))
    assert torch.isclose(asymmetric_loss(easy, y), only_positive)  # easy negatives contribute nothing at all
    assert asymmetric_loss(hard, y) > asymmetric_loss(easy, y)  # a confident wrong label still costs
    assert asymmetric_loss(hard, y) < multilabel_bce(hard, y)  # … but less than BCE charges: focusing
    assert torch.isclose(asymmetric_loss(hard, y, gamma_neg=0, margin=0), multilabel_bce(hard, y), atol=1e-5)


def test_label_graph_links_labels_that_occur_together() -> None:
    # a and b share most complaints, c stands alone, d co-occurs with a once (noise, not a relation)
    rows = [[1, 1, 0, 0]] * 6 + [[1, 0, 0, 0]] * 2 + [[0, 0, 1, 0]] * 5 + [[1, 0, 0, 1]] + [[0, 0, 0, 1]] * 3
    adj = label_graph.cooccurrence(np.array(rows, dtype=np.float32), threshold=0.2, min_pairs=3)
    assert adj[0, 1] > 0 and adj[1, 0] > 0
    assert adj[2, 2] == 1.0 and adj[2].sum() == 1.0  # no neighbours: keeps itself
    assert adj[0, 3] == 0 and adj[3, 0] == 0
    assert np.allclose(adj.sum(1), 1.0) and label_graph.edges(adj) == 2
    assert label_graph.edges(label_graph.identity(4)) == 0


def test_complaint_files_bad_input_is_named(tmp_path: Path) -> None:
    from knowledge_base.errors import CallbotError

    cases = {"empty.jsonl": b"", "binary.jsonl": b"\x00\x01\x02" * 100,
             "broken.jsonl": '{"text": "佣金太高", "labels": ["fee_too_high"]}\n{"text": "没有结尾"\n'.encode(),
             "nolabels.jsonl": '{"text": "佣金太高", "labels": []}\n'.encode(),
             "latin1.jsonl": '{"text": "caf\u00e9", "labels": ["x"]}'.encode("utf-16")}
    expected = {"empty.jsonl": "no complaints", "binary.jsonl": "binary", "broken.jsonl": ":2:",
                "nolabels.jsonl": ":1: a complaint without labels", "latin1.jsonl": "binary"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CallbotError, match=expected[name]):
            load_complaints(tmp_path / name)
    gbk = tmp_path / "gbk.jsonl"
    gbk.write_bytes('{"text": "转账三天没到账", "labels": ["transfer_delay"]}\n'.encode("gbk"))
    assert load_complaints(gbk) == [Complaint("转账三天没到账", ("transfer_delay",))]


def test_truncation_keeps_opening_and_close() -> None:
    text = "开头说明情况。" + "中间" * 15000 + "最后要求赔偿。"
    cut, truncated = truncate(text)
    assert truncated and len(cut) <= MAX_CHARS + 2 and cut.startswith("开头说明情况") and cut.endswith("最后要求赔偿。")
    assert truncate("短投诉") == ("短投诉", False)


def _subset(path: Path, labels: set[str]) -> list[Complaint]:
    out = []
    for c in load_complaints(path):
        kept = tuple(x for x in c.labels if x in labels)
        if kept:
            out.append(Complaint(c.text, kept))
    return out


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[ComplaintModel, list[Complaint], Path]:
    """A tiny FMLC model on the six largest labels of the product's training file; held-out complaints of the
    same labels (written by another writer) to measure it."""
    counts = Counter(x for c in load_complaints(DATA_DIR / "train.jsonl") for x in c.labels)
    labels = {code for code, _n in counts.most_common(6)}
    train, test = _subset(DATA_DIR / "train.jsonl", labels), _subset(DATA_DIR / "heldout.jsonl", labels)
    cache = tmp_path_factory.mktemp("cache")
    model = ComplaintModel.train(train, TrainConfig(**TINY), cache, progress=False)
    return model, test, model.save(tmp_path_factory.mktemp("model"))


def test_small_model_learns_labels_it_can_be_measured_on(small_model: tuple[ComplaintModel, list[Complaint], Path]) -> None:
    model, test, _dir = small_model
    report = model.evaluate(test)
    # Six labels: always predicting the most frequent one scores a micro-F1 well under 0.4.
    y, _ = model.labels.matrix(test)
    majority = np.zeros_like(y)
    majority[:, int(np.argmax(model.labels.counts))] = 1
    from nlu.complaints.metrics import multilabel_report

    baseline = multilabel_report(y, majority, list(model.labels.codes), list(model.labels.counts))["micro_f1"]
    assert report["micro_f1"] > max(0.6, baseline + 0.25), (report["micro_f1"], baseline)
    assert report["examples"] == len(test) and set(report["per_label"]) == set(model.labels.codes)
    assert model.meta["validation"]["best_epoch"] >= 1 and model.meta["graph_edges"] >= 0


def test_saved_model_loads_and_scores_the_same(small_model: tuple[ComplaintModel, list[Complaint], Path]) -> None:
    model, test, directory = small_model
    again = ComplaintModel.load(directory)
    texts = [c.text for c in test[:20]]
    assert np.allclose(model.probabilities(texts), again.probabilities(texts), atol=1e-3)  # word vectors stored as float16
    results = again.classify(["", "我的佣金怎么这么高，万三也太贵了", "x" * (MAX_CHARS + 10)])
    assert results[0].labels == []  # nothing said, nothing labelled
    assert results[1].labels and results[1].labels[0].score == max(s.score for s in results[1].labels)
    assert results[2].truncated and "truncated" in results[2].as_json()


def test_decision_gives_every_complaint_its_best_label() -> None:
    probs = np.array([[0.9, 0.6, 0.1], [0.2, 0.3, 0.1], [0.9, 0.9, 0.9]])
    assert decide(probs, 0.5).tolist() == [[1, 1, 0], [0, 1, 0], [1, 1, 1]]
    assert decide(probs, 0.5, max_labels=2)[2].sum() == 2


def test_label_set_reports_labels_it_does_not_know() -> None:
    labels = LabelSet.of([Complaint("a", ("x",)), Complaint("b", ("x", "y"))])
    y, unknown = labels.matrix([Complaint("c", ("y", "z"))])
    assert labels.codes == ("x", "y") and y.tolist() == [[0.0, 1.0]] and unknown == Counter({"z": 1})


def run_cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CALLBOT, "complaint", *args], cwd=ROOT, capture_output=True, text=True, input=stdin,
                          timeout=900, env=env)


def test_cli_train_classify_eval_and_bad_input(tmp_path: Path, small_model: tuple[ComplaintModel, list[Complaint], Path]) -> None:
    _model, test, _dir = small_model
    data = tmp_path / "train.jsonl"
    rows = [json.loads(line) for line in (DATA_DIR / "train.jsonl").read_text(encoding="utf-8").splitlines()[:300]]
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    model_dir = tmp_path / "model"
    trained = run_cli("train", "--data", str(data), "--model-dir", str(model_dir), "--epochs", "3",
                      "--word-dim", "32", "--word-corpus", "2000", "--loss", "bce", "--no-graph", "--encoder", "gru")
    assert trained.returncode == 0, trained.stderr
    assert "LWAN-BCE" in trained.stdout and (model_dir / "complaint_model.json").is_file()
    again = run_cli("train", "--data", str(data), "--model-dir", str(model_dir), "--epochs", "3",
                    "--word-dim", "32", "--word-corpus", "2000", "--loss", "bce", "--no-graph", "--encoder", "gru")
    assert again.returncode == 0 and "up to date" in again.stdout

    lines = tmp_path / "lines.txt"
    lines.write_text("佣金收得太高了\n\n" + "客服一直推诿" * 4000 + "\n", encoding="utf-8")
    classified = run_cli("classify", "--model-dir", str(model_dir), "--input", str(lines))
    assert classified.returncode == 0, classified.stderr
    results = [json.loads(line) for line in classified.stdout.splitlines()]
    assert len(results) == 3 and results[0]["labels"] and results[1]["labels"] == [] and "truncated" in results[2]
    assert "empty line" in classified.stderr

    test_file = tmp_path / "test.jsonl"
    test_file.write_text("\n".join(json.dumps({"text": c.text, "labels": [*c.labels, "label_nobody_trained"]},
                                              ensure_ascii=False) for c in test[:30]), encoding="utf-8")
    chart = tmp_path / "f1.png"
    evaluated = run_cli("eval", "--model-dir", str(model_dir), "--test", str(test_file), "--chart", str(chart))
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert {"micro_f1", "macro_f1", "tail_macro_f1", "per_label"} <= set(report)
    assert report["unknown_labels"] == {"label_nobody_trained": 30} and "label_nobody_trained" in evaluated.stderr
    assert chart.read_bytes()[:4] == b"\x89PNG"

    binary = tmp_path / "bad.txt"
    binary.write_bytes(b"\x00\xff" * 50)
    for args in (["classify", "--model-dir", str(model_dir), "--input", str(binary)],
                 ["eval", "--model-dir", str(tmp_path / "nothing"), "--test", str(test_file)],
                 ["train", "--data", str(binary), "--model-dir", str(tmp_path / "m2")]):
        failed = run_cli(*args)
        assert failed.returncode != 0 and "Traceback" not in failed.stderr, failed.stderr
        assert "binary" in failed.stderr or "callbot complaint train" in failed.stderr, failed.stderr


def test_relabel_stored_complaints_with_the_model(tmp_path: Path, small_model: tuple[ComplaintModel, list[Complaint], Path]) -> None:
    import os

    from knowledge_base.db import Store
    from knowledge_base.models import Conversation, ConversationTurn

    model, _test, model_dir = small_model
    env = {**os.environ, "CALLBOT_HOME": str(tmp_path)}
    assert subprocess.run([CALLBOT, "kb", "demo"], cwd=ROOT, env=env, capture_output=True, timeout=300).returncode == 0
    store = Store(f"sqlite:///{tmp_path / 'callbot.db'}")
    said = "你们的佣金收得也太高了，万分之三，别家都万一免五"
    expected = [s.label for s in model.classify([said])[0].labels]
    with store.session() as s:
        s.add(Conversation(external_id="old-chat", channel="chat", complaint_labels=["unclassified"], turns=[
            ConversationTurn(seq=1, speaker="user", text=said, intent="complain"),
            ConversationTurn(seq=2, speaker="bot", text="非常抱歉", intent=None)]))
        s.add(Conversation(external_id="no-complaint", channel="chat", turns=[
            ConversationTurn(seq=1, speaker="user", text="怎么开户", intent="faq")]))
    dry = run_cli("relabel", "--model-dir", str(model_dir), "--dry-run", env=env)
    assert dry.returncode == 0 and "1 conversations with complaints; 1 would change" in dry.stdout, dry.stdout + dry.stderr
    done = run_cli("relabel", "--model-dir", str(model_dir), env=env)
    assert done.returncode == 0 and "1 relabelled" in done.stdout, done.stdout + done.stderr
    with store.session() as s:
        from sqlalchemy import select

        labels = {c.external_id: c.complaint_labels for c in s.scalars(select(Conversation))}
    assert labels["old-chat"] == sorted(expected) and labels["no-complaint"] in ([], None)
    assert run_cli("relabel", "--model-dir", str(model_dir), "--since", "yesterday", env=env).returncode != 0
