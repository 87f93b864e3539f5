"""Rasa intent classifier that asks callbot's NLU service (`POST /nlu/parse`) instead of a local model.

Runs in Rasa's own environment (Python 3.10, no torch). The scenario comes from the message
metadata (`{"scenario": "ipo_allotment_notice"}`) or, failing that, from the conversation the
sender id belongs to (the NLU service looks it up); without either, the dialogue intents of all
scenarios are matched.
If the NLU service is down or slow, the message gets `nlu_fallback` and the reason is kept in
the parse result, so the dialogue can apologise instead of crashing.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Optional

import requests
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

logger = logging.getLogger(__name__)

FALLBACK = "nlu_fallback"
NLU_PROPERTY = "callbot_nlu"  # the full NLU answer, kept in the parse data for actions
RESENDABLE = (502, 503, 504)


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER], is_trainable=False)
class RemoteSimilarityClassifier(GraphComponent, IntentClassifier):
    @staticmethod
    def get_default_config() -> dict[str, Any]:
        return {"url": "http://127.0.0.1:8000", "timeout": 3.0, "top_k": 5}

    def __init__(self, config: dict[str, Any]) -> None:
        self.url = os.environ.get("CALLBOT_NLU_URL", config["url"]).rstrip("/") + "/nlu/parse"
        self.timeout = float(os.environ.get("CALLBOT_NLU_TIMEOUT", config["timeout"]))
        # The web app's NLU route admits Rasa by the shared service token (callbot/auth/service_token.py).
        self.headers = {"Authorization": "Bearer " + self._service_token()}
        self.top_k = int(config["top_k"])
        self.session = requests.Session()

    @staticmethod
    def _service_token() -> str:
        """Set by `callbot up` in Rasa's environment; else the token file the web app generated on this machine."""
        token = os.environ.get("CALLBOT_SERVICE_TOKEN", "")
        if not token:
            cache = os.environ.get("CALLBOT_CACHE_DIR") or os.path.join(
                os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "callbot")
            try:
                with open(os.path.join(cache, "service_token"), encoding="ascii") as fh:
                    token = fh.read().strip()
            except OSError:
                logger.warning("No service token (CALLBOT_SERVICE_TOKEN): the NLU service will refuse parses")
        return token

    @classmethod
    def create(cls, config: dict[str, Any], model_storage: ModelStorage, resource: Resource,
               execution_context: ExecutionContext) -> RemoteSimilarityClassifier:
        return cls(config)

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        return training_data

    def process(self, messages: list[Message]) -> list[Message]:
        for message in messages:
            self._classify(message)
        return messages

    def _classify(self, message: Message) -> None:
        text = (message.get("text") or "").strip()
        metadata = message.get("metadata") or {}
        scenario: Optional[str] = metadata.get("scenario") if isinstance(metadata, dict) else None
        sender: Optional[str] = metadata.get("sender_id") if isinstance(metadata, dict) else None
        if not text or text.startswith("/"):
            return  # empty, or an intent given directly (/intent{...}): handled by Rasa's regex handler
        started = time.monotonic()
        try:
            resp = self._parse({"text": text, "scenario": scenario, "sender_id": sender, "k": self.top_k})
            resp.raise_for_status()
            result = resp.json()
        except (requests.RequestException, ValueError) as exc:
            logger.warning("NLU service unavailable (%s): answering nlu_fallback", type(exc).__name__)
            self._set(message, FALLBACK, 0.0, [], {"error": "nlu_unavailable", "detail": type(exc).__name__})
            return
        intent = result.get("intent") or {}
        name = intent.get("name") or FALLBACK
        ranking = [{"name": r["name"], "confidence": float(r["confidence"])} for r in result.get("intent_ranking", [])]
        result["client_latency_ms"] = round((time.monotonic() - started) * 1000, 2)
        self._set(message, name, float(intent.get("confidence") or 0.0), ranking, result)

    def _parse(self, body: dict[str, Any]) -> requests.Response:
        """A parse only reads, so it is safe to send again: once, when the web worker it reached died mid-request
        (nginx answers 502 for a POST in flight and does not resend it itself) or refused the connection."""
        try:
            resp = self.session.post(self.url, json=body, headers=self.headers, timeout=self.timeout)
            if resp.status_code not in RESENDABLE:
                return resp
        except requests.ConnectionError:
            pass
        return self.session.post(self.url, json=body, headers=self.headers, timeout=self.timeout)

    @staticmethod
    def _set(message: Message, name: str, confidence: float, ranking: list[dict[str, Any]], result: dict[str, Any]) -> None:
        message.set("intent", {"name": name, "confidence": confidence}, add_to_output=True)
        message.set("intent_ranking", ranking, add_to_output=True)
        message.set(NLU_PROPERTY, result, add_to_output=True)
