"""One Settings object for the whole of promptloop.

Precedence, lowest first: field defaults < a ``promptloop.toml`` file <
environment variables ``PROMPTLOOP_*`` < explicit keyword arguments (which is
how CLI flags arrive). Everything promptloop writes lives under ``home``
unless a flag names another place, so one folder can be backed up, moved or
deleted as a unit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_ENV = "PROMPTLOOP_CONFIG"
DEFAULT_CONFIG_NAME = "promptloop.toml"


class GenerationSettings(BaseModel):
    """Sampling defaults for the rewriter; per-call params override them."""

    n: int = Field(4, ge=1, le=64, description="candidates sampled per prompt")
    max_new_tokens: int = Field(160, ge=1, le=4096)
    temperature: float = Field(0.8, ge=0.0, le=5.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    batch_size: int = Field(16, ge=1, description="conversations per forward batch")


class CollectSettings(BaseModel):
    """How a collection is cut up: checkpointed chunks, fanned out (LangGraph ``Send``) into parts.

    A part is one batched pass of the rewrite pipeline (one model call per
    node over all its prompts). In-process backends run one part's model call
    at a time, so parts as big as the model batch and two in flight (one
    generating while the other is guarded, critiqued, judged) are right; a
    served backend (``vllm serve``, any OpenAI-compatible server) batches
    concurrent requests itself, so give it smaller parts and more in flight.
    """

    chunk_size: int = Field(64, ge=1, description="prompts per checkpointed graph run (one thread)")
    part_size: int = Field(32, ge=1, description="prompts per fanned-out part (one batched pipeline pass)")
    max_concurrency: int = Field(2, ge=1, le=256, description="parts in flight at once (LangGraph max_concurrency)")


class RewriteSettings(BaseModel):
    """What the video model likes: a prompt of roughly this many words."""

    target_words_min: int = Field(40, ge=1)
    target_words_max: int = Field(120, ge=1)
    keep_user_language: bool = True

    @model_validator(mode="after")
    def _window(self) -> RewriteSettings:
        if self.target_words_min > self.target_words_max:
            raise ValueError("rewrite.target_words_min must not exceed rewrite.target_words_max")
        return self


class GuardSettings(BaseModel):
    """Thresholds of the layered safety guard (see agents/safety/guard.py)."""

    flag_threshold: float = Field(0.5, ge=0, le=1)
    block_threshold: float = Field(0.5, ge=0, le=1)
    profanity_threshold: float = Field(0.8, ge=0, le=1)
    use_llm: bool = Field(False, description="ask the chat model too (only worth it with a capable model)")
    pattern_score: float = Field(0.9, ge=0, le=1, description="score given by an explicit pattern match")
    classifier_c: float = Field(16.0, gt=0, description="inverse L2 strength of the embedding classifiers")


class CriticSettings(BaseModel):
    """When a candidate passes, and how hard the critic leans on the LLM."""

    harmless_threshold: float = Field(0.8, ge=0, le=1)
    accurate_threshold: float = Field(0.6, ge=0, le=1)
    helpful_threshold: float = Field(0.6, ge=0, le=1)
    max_refine_steps: int = Field(2, ge=0, le=10)
    use_llm: bool = True
    llm_weight: float = Field(0.25, ge=0, le=1, description="share of the LLM's scores in each principle")
    llm_retries: int = Field(1, ge=0, le=5, description="re-asks after a malformed LLM critique")
    llm_breaker_window: int = Field(12, ge=0, description="LLM answers remembered by the circuit breaker "
                                                           "(0 = never stop asking)")
    llm_breaker_min_valid: float = Field(0.25, ge=0, le=1, description="stop asking when fewer of those parsed")


class JudgeSettings(BaseModel):
    """Weights of the reward judge's total; dimensions missing here weigh 0."""

    weights: dict[str, float] = Field(default_factory=lambda: {
        "harmless": 0.3, "accurate": 0.35, "helpful": 0.2, "aspect_coverage": 0.1, "length_fit": 0.05,
    })


class PromotionSettings(BaseModel):
    """When a candidate replaces the champion (evaluation/gate.py): the primary metric must gain with a paired
    bootstrap interval above zero on the held-out prompts, and no guardrail may regress past its tolerance.

    Guardrails are metrics the training reward does not optimise; a tolerance is how far the candidate may
    move in the metric's worse direction (intent recall down, repetition up, fluency down, ...).
    """

    primary_metric: str = Field("judge_total", description="per-prompt metric whose mean gain must be significant")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="confidence level of the bootstrap interval")
    resamples: int = Field(2000, ge=100, le=100_000, description="bootstrap resamples")
    guardrails: dict[str, float] = Field(default_factory=lambda: {
        "intent_recall_at_1": 0.02, "repetition": 0.02, "fluency": 0.1, "unsafe_output_rate": 0.0,
        "benign_refusal_rate": 0.0,
    }, description="metric -> tolerance (in the metric's worse direction)")


AGENTS_WITH_MODELS = ("rewriter", "critic", "guard")


class BackendSettings(BaseModel):
    """Where one agent's chat model runs.

    ``transformers``: in process (agents on the same model share one copy);
    ``openai``: any OpenAI-compatible server at ``base_url`` (``vllm serve``,
    ``transformers serve``, a hosted API); ``vllm``: in-process vLLM (CUDA).
    """

    kind: Literal["transformers", "openai", "vllm"] = "transformers"
    model: str | None = Field(None, description="model reference (in-process) or served model name (openai); "
                              "default: base_model")
    base_url: str | None = Field(None, description="openai: server URL, e.g. http://localhost:8000/v1")
    api_key: str | None = Field(None, description="openai: bearer token (or set OPENAI_API_KEY)")
    timeout: float = Field(120.0, gt=0, description="openai: seconds per request")
    max_retries: int = Field(4, ge=0, le=20, description="openai: retries with exponential backoff")
    concurrency: int = Field(8, ge=1, le=512, description="openai: requests in flight at once")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="openai: extra request fields "
                                       "(server-specific, e.g. vLLM's top_k)")

    @model_validator(mode="after")
    def _needs_url(self) -> BackendSettings:
        if self.kind == "openai" and not self.base_url:
            raise ValueError("backend kind 'openai' needs base_url (e.g. http://localhost:8000/v1)")
        return self


class VideoSettings(BaseModel):
    """The video model, how it renders, and how video-level feedback is measured and weighed.

    Render fields left None take the model's defaults (CogVideoX-2b's for real
    models, small ones for ``tiny``). ``weights`` weigh the video dimensions in
    the video total; ``share`` is the video total's weight in a candidate's
    combined reward: total = (1 - share) * text total + share * video total.
    """

    model: str = Field("tiny", description="hub id (THUDM/CogVideoX-2b, Wan-AI/Wan2.1-T2V-1.3B-Diffusers, "
                       "Lightricks/LTX-Video), local folder, or 'tiny' (random weights, CPU tests)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    cpu_offload: bool = Field(False, description="diffusers model CPU offload (GPU memory for speed)")
    vae_tiling: bool = False
    vae_slicing: bool = False
    batch_size: int = Field(1, ge=1, le=64, description="videos per pipeline call")
    num_frames: int | None = Field(None, ge=1)
    fps: int | None = Field(None, ge=1, le=120)
    width: int | None = Field(None, ge=8)
    height: int | None = Field(None, ge=8)
    steps: int | None = Field(None, ge=1, le=1000)
    guidance_scale: float | None = Field(None, ge=0)
    negative_prompt: str | None = None
    seeds: int = Field(1, ge=1, le=16, description="renders per candidate in `collect pairs --video`")
    metric_frames: int = Field(8, ge=1, le=64, description="frames sampled for NSFW, alignment and the VLM")
    alignment_model: str | None = Field(None, description="CLIP/SigLIP path or hub id; None: alignment "
                                        "reported unavailable")
    nsfw: bool = True
    vlm: BackendSettings | None = Field(None, description="a VLM judge on an OpenAI-compatible server "
                                        "(kind 'openai', base_url, model)")
    lora: str | None = Field(None, description="a reward-weighted LoRA for the video model (`train rwr` version "
                             "name or folder)")
    critic: str | None = Field(None, description="a learned critic (`train critic` version name or folder) "
                               "scoring critic_<dimension>")
    weights: dict[str, float] = Field(default_factory=lambda: {
        "temporal_flickering": 0.1, "dynamic_degree": 0.1, "motion_smoothness": 0.15, "frame_quality": 0.15,
        "text_video_alignment": 0.25, "frame_safety": 0.25, "vlm_visual_quality": 0.1,
        "vlm_text_alignment": 0.2, "vlm_motion_quality": 0.1, "vlm_safety": 0.2,
        "critic_semantic_consistency": 0.2, "critic_motion_smoothness": 0.15, "critic_video_fidelity": 0.15,
    })
    share: float = Field(0.5, ge=0, le=1, description="video total's weight in the combined reward")

    @model_validator(mode="after")
    def _vlm_is_served(self) -> VideoSettings:
        if self.vlm is not None and self.vlm.kind != "openai":
            raise ValueError("video.vlm must be an OpenAI-compatible server (kind 'openai' with base_url)")
        return self


class RatingSettings(BaseModel):
    """What people rate videos on (LiFT's three dimensions by default) and on which scale."""

    dimensions: dict[str, str] = Field(default_factory=lambda: {
        "semantic_consistency": "does the video show what the prompt asks for, all of it?",
        "motion_smoothness": "is the motion natural and smooth, free of jitter, warping or frozen frames?",
        "video_fidelity": "is the picture clear, detailed and free of artifacts?",
    })
    scale_min: float = 1.0
    scale_max: float = 5.0
    require_rationale: bool = Field(True, description="a score needs a rationale (LiFT collects both)")

    @model_validator(mode="after")
    def _scale(self) -> RatingSettings:
        if self.scale_min >= self.scale_max:
            raise ValueError("ratings.scale_min must be below ratings.scale_max")
        if not self.dimensions:
            raise ValueError("ratings.dimensions must name at least one dimension")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PROMPTLOOP_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    config_file: Path | None = Field(None, description="TOML file read below env vars; default ./promptloop.toml")
    home: Path = Field(Path("~/.promptloop"), description="database, model cache, adapters, videos, reports")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite file in home")
    base_model: str = Field(
        "smollm2-135m-instruct",
        description="rewriter base: an embedded model name, a hub id, a local folder or a .gguf file",
    )
    embedder_model: str = Field("all-minilm-l6-v2", description="embedded name, hub id or local folder")
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    seed: int = 0
    max_prompt_chars: int = Field(1000, ge=1, description="longer user prompts are rejected on import")
    record_traffic: bool = Field(True, description="store prompts sent through the rewrite graph as source "
                                 "'traffic' (what `loop watch` learns from); false to opt out")
    backends: dict[Literal["rewriter", "critic", "guard"], BackendSettings] = Field(
        default_factory=dict, description="per-agent model backend; agents not named run base_model in process")
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    collect: CollectSettings = Field(default_factory=CollectSettings)
    rewrite: RewriteSettings = Field(default_factory=RewriteSettings)
    guard: GuardSettings = Field(default_factory=GuardSettings)
    critic: CriticSettings = Field(default_factory=CriticSettings)
    judge: JudgeSettings = Field(default_factory=JudgeSettings)
    video: VideoSettings = Field(default_factory=VideoSettings)
    ratings: RatingSettings = Field(default_factory=RatingSettings)
    promotion: PromotionSettings = Field(default_factory=PromotionSettings)

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'promptloop.db'}"
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        init_kwargs: dict[str, Any] = getattr(init_settings, "init_kwargs", {})
        toml_path = _config_path(init_kwargs.get("config_file"))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    # Folders under home. Properties, not fields: they follow home.
    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def adapters_dir(self) -> Path:
        return self.home / "adapters"

    @property
    def videos_dir(self) -> Path:
        return self.home / "videos"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def checkpoints_path(self) -> Path:
        return self.home / "checkpoints.sqlite"

    def backend_for(self, agent: str) -> BackendSettings:
        if agent not in AGENTS_WITH_MODELS:
            raise ValueError(f"unknown agent '{agent}'; expected one of {', '.join(AGENTS_WITH_MODELS)}")
        return self.backends.get(agent) or BackendSettings()

    def append_report(self, name: str, row: dict) -> Path:
        """Append one JSON line to ``reports/<name>.jsonl`` (benchmarks keep their history there)."""
        import json

        self.reports_dir.mkdir(parents=True, exist_ok=True)
        path = self.reports_dir / f"{name}.jsonl"
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, default=str) + "\n")
        return path

    def ensure_home(self) -> Path:
        for d in (self.home, self.models_dir, self.adapters_dir, self.videos_dir, self.reports_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self.home


def _config_path(explicit: str | Path | None) -> Path | None:
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        return path
    env = os.environ.get(CONFIG_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{CONFIG_ENV} points to a missing file: {path}")
        return path
    local = Path.cwd() / DEFAULT_CONFIG_NAME
    return local if local.is_file() else None


def default_of(section: type[BaseModel], name: str) -> Any:
    """A setting's default, for the dataclasses and agents that need one: Settings stays its only source."""
    return section.model_fields[name].get_default(call_default_factory=True)


def load_settings(**overrides: Any) -> Settings:
    """Build Settings, dropping overrides that are None (unset CLI flags)."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
