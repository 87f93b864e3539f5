"""Choosing the lexical head's weight per model, on the dev split, together with its thresholds.

The lexical head (nlu.lexical_head) adds weight × log p(intent | characters) to each candidate's cosine. What a
weight does depends on how the encoder spreads its cosines: the release's sit over 0.3–1, e5-small's over 0.85–1,
so the weight that helps one lets the character model overrule the other (split 18: e5-small + 0.05 understood
more callers but rejected 5 points less chatter). So each model gets its own weight, chosen here:

- for every weight of the grid, the model is calibrated on one half of dev and judged on the other, both ways
  (nlu.devcheck's cross-fitting: a fair figure, the test split untouched);
- a weight is eligible when its out-of-fold chatter rejection is at most one standard error below the head-off
  figure ("the fallback rate on out-of-domain chatter kept where it is");
- among those, the highest pooled in-domain accuracy wins (the smaller weight on a tie);
- then, at that weight, whether the head also reads sound (folded pinyin grams, nlu.lexical_head): kept only when
  it is eligible and raises pooled accuracy;
- then the shortest reply the head may read (``lexical_min_chars``: 0 = every reply, else 2–5
  characters) is chosen by the same rule (the fewest characters on a tie): split 20's one-to-four-character replies
  were understood less often with the head than without it;
- the thresholds are then calibrated on the whole of dev at that weight and saved with it in thresholds.json,
  where the service reads it (nlu.lexical_head_weight unset).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nlu import heldout
from nlu.matcher import Matcher, Thresholds

GRID = (0.0, 0.02, 0.05, 0.08)
MIN_CHARS = (0, 2, 3, 4, 5)


@dataclass(frozen=True)
class WeightChoice:
    weight: float
    rows: dict[float, dict[str, Any]]  # weight → cross-fitted dev figures (nlu.devcheck.pooled)
    chatter_floor: float  # the least chatter rejection an eligible weight may have
    min_chars: int = 0
    gate_rows: dict[int, dict[str, Any]] | None = None  # min_chars → cross-fitted dev figures at the chosen weight
    sound: bool = False
    sound_row: dict[str, Any] | None = None  # cross-fitted dev figures at the chosen weight with sound grams read

    def eligible(self, weight: float) -> bool:
        return self.keeps_chatter(self.rows[weight])

    def keeps_chatter(self, row: dict[str, Any]) -> bool:
        chatter = row.get("chatter_rejected")
        return chatter is None or chatter >= self.chatter_floor - 1e-9

    def with_gate(self, gate_rows: dict[int, dict[str, Any]]) -> WeightChoice:
        """The same weight with the fewest-characters rule of the module's docstring over ``gate_rows``."""
        best = max((g for g in gate_rows if self.keeps_chatter(gate_rows[g])),
                   key=lambda g: (gate_rows[g]["pooled_accuracy"], -g), default=0)
        return replace(self, min_chars=best, gate_rows=gate_rows)

    def with_sound(self, row: dict[str, Any]) -> WeightChoice:
        """Sound grams kept when ``row`` (the chosen weight, sound on) keeps chatter and beats the weight's own row."""
        better = self.keeps_chatter(row) and row["pooled_accuracy"] > self.rows[self.weight]["pooled_accuracy"]
        return replace(self, sound=better, sound_row=row)

    def record(self) -> dict[str, Any]:
        return {"grid": {str(w): r for w, r in self.rows.items()}, "chatter_floor": self.chatter_floor,
                "chosen": self.weight, "min_chars": self.min_chars, "sound": self.sound, "sound_row": self.sound_row,
                "min_chars_grid": {str(g): r for g, r in (self.gate_rows or {}).items()}}


def set_weight(matcher: Matcher, weight: float, sound: bool | None = None) -> None:
    """Serve ``weight`` from now on (and the head reading sound grams or not), with the lexical head fitted (from its
    disk cache when it exists)."""
    matcher.lexical_head_weight = weight
    if sound is not None and sound != matcher.lexical_sound:
        matcher.lexical_sound = sound
        matcher._lexical = None  # the other variant's head must not serve while the new one is fitted
    matcher.refresh(force=True)
    matcher.wait_for_intent_head()


def choose(matcher: Matcher, dev: list[heldout.HeldoutUtterance], grid: Iterable[float] = GRID,
           progress: Callable[[str], None] | None = None) -> WeightChoice:
    from nlu.devcheck import crossfit, pooled

    say = progress or (lambda _msg: None)
    weights = sorted({0.0, *(float(w) for w in grid)})
    if any(w < 0 for w in weights):
        raise ValueError(f"lexical head weights must be ≥ 0, got {weights}")
    rows: dict[float, dict[str, Any]] = {}
    for w in weights:
        say(f"weight {w:g}: cross-fitting on dev")
        set_weight(matcher, w, sound=False)
        rows[w] = pooled(crossfit(matcher, dev))
        say(f"weight {w:g}: pooled {rows[w]['pooled_accuracy']}, chatter rejected {rows[w]['chatter_rejected']}")
    return pick(rows, n_chatter=sum(1 for u in dev if u.intent is None))


def pick(rows: dict[float, dict[str, Any]], n_chatter: int) -> WeightChoice:
    """The rule of the module's docstring over cross-fitted ``rows`` (weight → figures; 0 must be among them)."""
    base = rows[0.0].get("chatter_rejected")
    floor = base - math.sqrt(base * (1 - base) / n_chatter) if base is not None and n_chatter else 0.0
    choice = WeightChoice(0.0, rows, round(floor, 4))
    best = max((w for w in rows if choice.eligible(w)), key=lambda w: (rows[w]["pooled_accuracy"], -w))
    return WeightChoice(best, rows, choice.chatter_floor)


def tune(matcher: Matcher, dev: list[heldout.HeldoutUtterance], grid: Iterable[float] = GRID,
         progress: Callable[[str], None] | None = None, min_chars: Iterable[int] = MIN_CHARS, sound: bool = True,
         ) -> tuple[WeightChoice, Thresholds, dict[str, Any]]:
    """Choose the weight (see the module's docstring), then calibrate the thresholds on the whole of dev at it.
    Returns (choice, thresholds, calibration report); the caller saves them (nlu.calibration.save_thresholds)."""
    from nlu.calibration import calibrate
    from nlu.data.kb_split import is_clean_query
    from nlu.devcheck import crossfit, pooled

    say = progress or (lambda _msg: None)
    choice = choose(matcher, dev, grid, progress)
    if choice.weight > 0 and sound:
        set_weight(matcher, choice.weight, sound=True)
        choice = choice.with_sound(pooled(crossfit(matcher, dev)))
        say(f"weight {choice.weight:g} with sound grams: pooled {choice.sound_row['pooled_accuracy']}, chatter rejected "
            f"{choice.sound_row['chatter_rejected']} → {'kept' if choice.sound else 'not kept'}")
    set_weight(matcher, choice.weight, sound=choice.sound)
    if choice.weight > 0 and min_chars:
        choice = choice.with_gate(choose_min_chars(matcher, dev, choice, min_chars, say))
    matcher.lexical_min_chars = choice.min_chars
    say(f"weight {choice.weight:g}, replies of {choice.min_chars} characters or more: calibrating on the whole dev split")
    thresholds, report = calibrate(matcher, only=lambda e: is_clean_query(e.text), dev=dev)
    report["lexical_weight_choice"] = choice.record()
    return choice, thresholds, report


def choose_min_chars(matcher: Matcher, dev: list[heldout.HeldoutUtterance], choice: WeightChoice,
                     options: Iterable[int], say: Callable[[str], None]) -> dict[int, dict[str, Any]]:
    """Cross-fitted dev figures at the chosen weight for each shortest reply the head may read (0 = row of the weight)."""
    from nlu.devcheck import crossfit, pooled

    # Every reply read: the row measured with what is served at this weight (sound grams or not).
    rows: dict[int, dict[str, Any]] = {0: choice.sound_row if choice.sound and choice.sound_row else choice.rows[choice.weight]}
    for n in sorted({int(g) for g in options} - {0}):
        if n < 0:
            raise ValueError(f"lexical_min_chars must be ≥ 0, got {n}")
        matcher.lexical_min_chars = n
        rows[n] = pooled(crossfit(matcher, dev))
        say(f"weight {choice.weight:g}, head on replies of {n}+ characters: pooled {rows[n]['pooled_accuracy']}, "
            f"chatter rejected {rows[n]['chatter_rejected']}")
    matcher.lexical_min_chars = 0
    return rows


def tuned_choice(model_dir: Any) -> dict[str, Any] | None:
    """How the model's stored weight was chosen, or None when it never was (thresholds.json's calibration record)."""
    path = Path(model_dir) / "thresholds.json"
    try:
        return (json.loads(path.read_text()).get("calibration") or {}).get("lexical_weight_choice")
    except (OSError, ValueError, AttributeError):
        return None


def tune_model(model_dir: Any, store: Any, cache_dir: Any, intent_head_weight: float = 0.0, grid: Iterable[float] = GRID,
               progress: Callable[[str], None] | None = None, min_chars: Iterable[int] = MIN_CHARS,
               sound: bool = True) -> WeightChoice:
    """Tune the model at ``model_dir`` on today's dev split and save the weight with its thresholds."""
    from nlu.calibration import save_thresholds
    from nlu.encoders.memo import MemoEncoder
    from nlu.encoders.sentence_encoder import SentenceEncoder

    matcher = Matcher(store, MemoEncoder(SentenceEncoder(Path(model_dir))), Path(cache_dir),
                      intent_head_weight=intent_head_weight)
    choice, thresholds, report = tune(matcher, heldout.load("dev"), grid, progress, min_chars, sound)
    save_thresholds(Path(model_dir), thresholds, report)
    return choice
