"""The shipping rule: beat e5-small on the pooled held-out utterances, and be worse on no measure by more than
the noise of a paired comparison (nlu.model_quality.ship_verdict)."""

from __future__ import annotations

import random

import numpy as np

from nlu.data.corpora import Pair
from nlu.model_quality import _paired_se, ship_verdict

GATED = ("caller_replies_open_accuracy", "caller_replies_call_accuracy", "faq_questions_open_accuracy",
         "call_facts_call_accuracy")


def flags(right: int, n: int, seed: int) -> str:
    marks = ["1"] * right + ["0"] * (n - right)
    random.Random(seed).shuffle(marks)
    return "".join(marks)


def figures(detail: dict[str, str]) -> dict[str, float]:
    return {k: round(v.count("1") / len(v), 4) for k, v in detail.items()}


def test_paired_standard_error_counts_only_the_sentences_the_models_disagree_on() -> None:
    assert _paired_se("1100", "1100") == 0.0
    # four disagreements on 100 items, two each way: sqrt(4 - 0) / 100
    a = "1" * 2 + "0" * 2 + "1" * 96
    b = "0" * 2 + "1" * 2 + "1" * 96
    assert abs(_paired_se(a, b) - 0.02) < 1e-9


def test_a_small_loss_within_the_noise_does_not_block_a_model_that_wins_overall() -> None:
    e5 = {"caller_replies_open_accuracy": flags(250, 320, 1), "caller_replies_call_accuracy": flags(250, 320, 2),
          "faq_questions_open_accuracy": flags(250, 280, 3), "call_facts_call_accuracy": flags(62, 77, 4)}
    mine = dict(e5)
    mine["caller_replies_open_accuracy"] = flags(265, 320, 5)  # clearly better on callers
    mine["call_facts_call_accuracy"] = flags(60, 77, 6)  # 2 of 77 worse, many disagreements: within one SE
    verdict = ship_verdict(figures(mine), figures(e5), mine, e5, {})
    row = verdict["measures"]["call_facts_call_accuracy"]
    assert row["basis"] == "paired SE" and row["tolerance"] > 0.026 and row["not_worse"] and not row["at_least"]
    assert verdict["pooled_heldout"]["beats"] and verdict["better"] and not verdict["at_least_everywhere"]


def test_a_loss_beyond_the_noise_or_no_overall_win_blocks_shipping() -> None:
    e5 = {k: flags(70, 100, i) for i, k in enumerate(GATED)}
    # 10 points worse on FAQ, with only those 10 sentences in disagreement: far beyond one SE (3.2 points)
    mine = dict(e5, caller_replies_open_accuracy=e5["caller_replies_open_accuracy"].replace("0", "1", 20))
    mine["faq_questions_open_accuracy"] = e5["faq_questions_open_accuracy"].replace("1", "0", 10)
    verdict = ship_verdict(figures(mine), figures(e5), mine, e5, {})
    assert verdict["pooled_heldout"]["beats"] and not verdict["measures"]["faq_questions_open_accuracy"]["not_worse"]
    assert not verdict["better"]
    # identical outcomes: level everywhere, but it does not beat e5-small, so it does not ship
    same = ship_verdict(figures(e5), figures(e5), e5, e5, {})
    assert same["at_least_everywhere"] and not same["pooled_heldout"]["beats"] and not same["better"]


def test_without_per_sentence_outcomes_the_comparison_is_strict() -> None:
    e5 = {"kb_heldout_top1": 0.80, "caller_replies_open_accuracy": 0.79}
    assert not ship_verdict({"kb_heldout_top1": 0.799, "caller_replies_open_accuracy": 0.9}, e5, {}, {}, {})["better"]
    assert ship_verdict({"kb_heldout_top1": 0.80, "caller_replies_open_accuracy": 0.9}, e5, {}, {}, {})["better"]


def test_spearman_is_compared_with_a_paired_bootstrap_of_the_same_dev_pairs() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 1000)
    pairs = [Pair("a", "b", int(y)) for y in labels]
    base = labels + rng.normal(0, 0.8, 1000)
    slightly = base + rng.normal(0, 0.05, 1000)  # nearly the same scores: tiny spread of the difference
    much_worse = labels + rng.normal(0, 3.0, 1000)
    e5_detail = {"lcqmc_spearman": list(base)}
    from nlu.similarity_eval import spearman100

    def fig(scores: np.ndarray) -> dict[str, float]:
        return {"lcqmc_spearman": spearman100(scores, labels)}

    close = ship_verdict(fig(slightly), fig(base), {"lcqmc_spearman": list(slightly)}, e5_detail, {"lcqmc": pairs})
    far = ship_verdict(fig(much_worse), fig(base), {"lcqmc_spearman": list(much_worse)}, e5_detail, {"lcqmc": pairs})
    assert close["measures"]["lcqmc_spearman"]["basis"] == "bootstrap SE"
    assert close["measures"]["lcqmc_spearman"]["not_worse"]
    assert not far["measures"]["lcqmc_spearman"]["not_worse"]
