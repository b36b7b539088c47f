"""What one process shares: settings, the database engine and the loaded models.

Built once by the CLI (or by an app) and passed down, instead of module
globals; each heavy object is created on first use and then reused, so a
process loads the base model once however many agents call it.
"""

from __future__ import annotations

from functools import cached_property

from sqlalchemy.engine import Engine

from promptloop.config import Settings

# RenderRequest fields Settings.video may set for every render (None = the model's default)
RENDER_FIELDS = ("num_frames", "fps", "width", "height", "steps", "guidance_scale", "negative_prompt")


class Runtime:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._models: dict[str, object] = {}

    @cached_property
    def engine(self) -> Engine:
        from promptloop.store.engine import make_engine

        self.settings.ensure_home()
        return make_engine(self.settings.database_url)

    def upgrade_db(self) -> str | None:
        """Migrate to head once per Runtime; every command and graph calls this, only the first does work."""
        return self._db_revision

    @cached_property
    def _db_revision(self) -> str | None:
        from promptloop.store.migrate import upgrade

        return upgrade(self.engine)

    @property
    def chat_model(self):  # -> ChatModel
        """The rewriter's chat model (where rewriter versions' adapters are loaded)."""
        return self.model_for("rewriter")

    def model_for(self, agent: str):  # -> ChatModel
        """The chat model ``agent`` runs on (Settings.backends); agents with the same backend share one instance."""
        backend = self.settings.backend_for(agent)
        backend = backend.model_copy(update={"model": backend.model or self.settings.base_model})
        key = backend.model_dump_json()  # an unset model and base_model named explicitly are one instance
        if key not in self._models:
            from promptloop.agents.llm.factory import build_chat_model

            self._models[key] = build_chat_model(backend, self.settings)
        return self._models[key]

    @cached_property
    def embedder(self):  # -> Embedder
        from promptloop.agents.embedder import Embedder

        return Embedder(self.settings.embedder_model, device=self.settings.device)

    @cached_property
    def guard(self):  # -> SafetyGuard
        from promptloop.agents.safety.guard import GuardConfig, SafetyGuard

        g = self.settings.guard
        cfg = GuardConfig(flag_threshold=g.flag_threshold, block_threshold=g.block_threshold,
                          profanity_threshold=g.profanity_threshold, use_llm=g.use_llm)
        return SafetyGuard(self.embedder, cfg, llm=self.model_for("guard") if g.use_llm else None)

    @cached_property
    def critic(self):  # -> PrincipleCritic
        return self.make_critic(use_llm=self.settings.critic.use_llm)

    @cached_property
    def deterministic_critic(self):  # -> PrincipleCritic
        """The critic without the LLM pass: same text, same scores; what evaluation uses."""
        return self.make_critic(use_llm=False)

    def make_critic(self, *, use_llm: bool):  # -> PrincipleCritic
        from promptloop.agents.critic import PrincipleCritic

        c, r = self.settings.critic, self.settings.rewrite
        return PrincipleCritic(self.embedder, self.guard, self.model_for("critic") if use_llm else None,
                               min_words=r.target_words_min,
                               max_words=r.target_words_max, llm_weight=c.llm_weight if use_llm else 0.0,
                               llm_retries=c.llm_retries, breaker_window=c.llm_breaker_window,
                               breaker_min_valid=c.llm_breaker_min_valid)

    @cached_property
    def judge(self):  # -> RewardJudge
        from promptloop.agents.judge import RewardJudge

        return RewardJudge(self.settings.judge.weights)

    # --- video ---------------------------------------------------------------------------
    def renderer(self, model: str | None = None):  # -> DiffusersRenderer
        """A renderer for Settings.video (``model`` overrides the video model); one pipeline per model per process."""
        from promptloop.agents.video.diffusers_renderer import DiffusersRenderer

        v = self.settings.video
        model = model or v.model
        lora = self.artifact_folder(v.lora, "rwr") if v.lora else None
        key = f"renderer:{model}:{lora}"
        if key not in self._models:
            self.settings.ensure_home()
            self._models[key] = DiffusersRenderer(
                model, out_dir=self.settings.videos_dir, dtype=v.dtype, device=v.device, cpu_offload=v.cpu_offload,
                vae_tiling=v.vae_tiling, vae_slicing=v.vae_slicing, batch_size=v.batch_size,
                defaults={f: getattr(v, f) for f in RENDER_FIELDS}, lora=lora)
        return self._models[key]

    def artifact_folder(self, ref: str, algorithm: str) -> str:
        """The folder of a video-side artifact named by its version (``train rwr`` / ``train critic``) or path."""
        from pathlib import Path

        if Path(ref).is_dir():
            return ref
        from promptloop.learners.versions import get_version

        self.upgrade_db()
        row = get_version(self.engine, ref)
        if row.algorithm != algorithm:
            from promptloop.errors import PromptloopError

            raise PromptloopError(f"'{ref}' is a {row.algorithm} version, not a {algorithm} version")
        return row.adapter_path

    @cached_property
    def render_cache(self):  # -> RenderCache
        from promptloop.agents.video.cache import RenderCache

        self.upgrade_db()
        return RenderCache(self.renderer(), self.engine)

    @cached_property
    def video_scorer(self):  # -> VideoScorer
        from promptloop.agents.video.alignment import TextVideoAlignment
        from promptloop.agents.video.nsfw import NSFWScorer
        from promptloop.agents.video.scorer import VideoScorer

        v = self.settings.video
        vlm = None
        if v.vlm is not None:
            from promptloop.agents.llm.openai_backend import OpenAIChatModel
            from promptloop.agents.video.vlm_judge import VLMJudge

            b = v.vlm
            client = OpenAIChatModel(b.base_url, b.model or "default", api_key=b.api_key, timeout=b.timeout,
                                     max_retries=b.max_retries, concurrency=b.concurrency, extra_body=b.extra_body)
            vlm = VLMJudge(client, frames=v.metric_frames)
        device = "cuda" if self.settings.device in ("auto", "cuda") and _cuda() else "cpu"
        extra = [self.learned_critic(v.critic)] if v.critic else []
        return VideoScorer(alignment=TextVideoAlignment(v.alignment_model, frames=v.metric_frames, device=device),
                           nsfw=NSFWScorer(frames=v.metric_frames) if v.nsfw else None, vlm=vlm, extra=extra)

    def learned_critic(self, ref: str):  # -> LearnedCritic
        """A trained critic by version name (``promptloop train critic``) or folder."""
        from pathlib import Path

        from promptloop.learners.critic import LearnedCritic

        path = Path(self.artifact_folder(ref, "critic"))
        if not (path / "critic.npz").is_file() and (path / "config.json").is_file():
            from promptloop.learners.vlm_critic import VLMCritic  # train critic --backend vlm

            return VLMCritic(path)
        return LearnedCritic(path, embedder=self.embedder)

    @cached_property
    def video_feedback(self):  # -> VideoFeedback
        from promptloop.graphs.video_feedback import VideoFeedback

        return VideoFeedback(self.render_cache, self.video_scorer, self.settings.video.weights)

    def rewrite_agents(self, *, record_traces: bool = True, default_version: str | None = None):
        """The agents of the rewrite graph; ``default_version`` (e.g. 'champion') is used when a run names none."""
        from promptloop.graphs.rewrite import RewriteAgents
        from promptloop.graphs.tracing import TraceRecorder

        if record_traces:
            self.upgrade_db()
        adapter = self.resolve_model_version(default_version) if default_version else None
        return RewriteAgents(guard=self.guard, rewriter=self.rewriter(adapter), critic=self.critic, judge=self.judge,
                             recorder=TraceRecorder(self.engine if record_traces else None))

    @cached_property
    def checkpointer(self):
        from promptloop.graphs.checkpoint import make_checkpointer

        return make_checkpointer(self.settings)

    @cached_property
    def rewrite_graph(self):
        from promptloop.graphs.rewrite import build_rewrite_graph

        return build_rewrite_graph(self.rewrite_agents(), checkpointer=self.checkpointer)

    def collect_graph(self, kind: str):
        """The checkpointed collection graph for ``kind`` ('sft', 'pairs' or 'evolve')."""
        from promptloop.graphs.collect_pairs import build_collect_pairs_graph
        from promptloop.graphs.collect_sft import build_collect_sft_graph
        from promptloop.graphs.evolve import build_evolve_graph

        builders = {"sft": build_collect_sft_graph, "pairs": build_collect_pairs_graph, "evolve": build_evolve_graph}
        if kind not in builders:
            from promptloop.errors import PromptloopError

            raise PromptloopError(f"unknown collection '{kind}'; expected one of {', '.join(builders)}")
        if kind == "pairs":
            return build_collect_pairs_graph(self.rewrite_agents(), self.engine, checkpointer=self.checkpointer,
                                             video=lambda: self.video_feedback)
        return builders[kind](self.rewrite_agents(), self.engine, checkpointer=self.checkpointer)

    def rewrite_context(self, **overrides):
        """RewriteContext from Settings, with per-call overrides (None = keep the setting)."""
        from promptloop.graphs.rewrite import RewriteContext

        s = self.settings
        base = dict(n=4, max_refine_steps=s.critic.max_refine_steps,
                    harmless_threshold=s.critic.harmless_threshold, accurate_threshold=s.critic.accurate_threshold,
                    helpful_threshold=s.critic.helpful_threshold, max_new_tokens=s.generation.max_new_tokens,
                    temperature=s.generation.temperature, top_p=s.generation.top_p, seed=s.seed,
                    record_traffic=s.record_traffic)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return RewriteContext(**base)

    def resolve_model_version(self, version: str | None) -> str | None:
        """'base' or None -> base model; 'champion' -> the promoted version (base if none); else a name or id.

        Loads the version's LoRA adapter into the shared chat model and returns its adapter name.
        """
        from sqlmodel import Session

        from promptloop.learners.versions import champion, get_version

        if version in (None, "base"):
            return None
        self.upgrade_db()
        if version == "champion":
            with Session(self.engine) as s:
                row = champion(s)
            if row is None:
                return None
        else:
            row = get_version(self.engine, version)
        if row.algorithm in ("critic", "rwr"):
            from promptloop.errors import PromptloopError

            raise PromptloopError(f"'{row.name}' is a {row.algorithm} version, not a rewriter version")
        if not row.adapter_path:
            return None
        self.chat_model.load_adapter(row.name, row.adapter_path)
        return row.name

    def rewriter(self, adapter: str | None = None, *, with_model: bool = True):
        """The rewriter from Settings; ``with_model=False`` gives only its prompt template (no model load)."""
        from promptloop.agents.rewriter import Rewriter

        r = self.settings.rewrite
        return Rewriter(self.chat_model if with_model else None, min_words=r.target_words_min,
                        max_words=r.target_words_max, adapter=adapter)

    def sampling(self, **overrides):
        from promptloop.agents.llm.base import SamplingParams

        g = self.settings.generation
        base = dict(max_new_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p,
                    seed=self.settings.seed)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return SamplingParams(**base)


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False
