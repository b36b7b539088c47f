"""The composition root: builds settings' engine, backends and agents once per process, and wires layers.

The only module (with the commands, the API and the UI above it) that knows
every layer. Below it, functions take what they use: an engine, settings,
agents, or a narrow typed protocol (``EvalDeps``, ``LoopDeps``) that this
class satisfies. Each heavy object is created on first use and reused, so a
process loads the base model once however many agents call it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from promptloop.config import BackendSettings, Settings
from promptloop.errors import PromptloopError

if TYPE_CHECKING:  # heavy imports only for the types; the objects are built on first use
    from langgraph.graph.state import CompiledStateGraph

    from promptloop.agents.embedder import Embedder
    from promptloop.agents.judge import RewardJudge
    from promptloop.agents.llm.base import ChatModel, SamplingParams
    from promptloop.agents.llm.reference import ReferenceLM
    from promptloop.agents.rewriter import Rewriter
    from promptloop.agents.safety.guard import SafetyGuard
    from promptloop.agents.text_critic import TextCritic
    from promptloop.agents.video.cache import RenderCache
    from promptloop.agents.video.diffusers_renderer import DiffusersRenderer
    from promptloop.agents.video.feedback import VideoFeedback
    from promptloop.agents.video.scorer import VideoScorer
    from promptloop.evaluation.runner import EvalConfig, EvalReport
    from promptloop.graphs.collection import CollectionReport, TeacherPlan
    from promptloop.graphs.rewrite import RewriteAgents, RewriteContext
    from promptloop.learners.config import LearnerConfig
    from promptloop.learners.data import TrainingData
    from promptloop.learners.trainer import TrainResult
    from promptloop.store.capabilities import CapabilityRecord
    from promptloop.store.models import Prompt

# RenderRequest fields Settings.video may set for every render (None = the model's default)
RENDER_FIELDS = ("num_frames", "fps", "width", "height", "steps", "guidance_scale", "negative_prompt")


class Services:
    def __init__(self, settings: Settings, *, create_store: bool = True):
        self.settings = settings
        # The CLI opens existing stores only (`init` creates); an app embedding the API gets its store made.
        self.create_store = create_store
        self._models: dict[str, object] = {}
        from promptloop.graphs.otel import configure

        configure(settings.telemetry)  # OTLP export of graph runs when an endpoint is configured

    # --- store -----------------------------------------------------------------------------
    @cached_property
    def engine(self) -> Engine:
        """The store, migrated to head when it is opened (once per process)."""
        from promptloop.store.migrate import open_store

        self.settings.ensure_home()
        pg = self.settings.postgres
        return open_store(self.settings.database_url, create=self.create_store, pool_size=pg.pool_size,
                          max_overflow=pg.max_overflow)

    @cached_property
    def checkpointer(self) -> Any:
        from promptloop.graphs.checkpoint import make_checkpointer

        return make_checkpointer(self.settings)

    # --- models and agents -----------------------------------------------------------------
    @property
    def chat_model(self) -> ChatModel:
        """The rewriter's chat model (where rewriter versions' adapters are loaded)."""
        return self.model_for("rewriter")

    def model_for(self, agent: str) -> ChatModel:
        """The chat model ``agent`` runs on (Settings.backends); agents with the same backend share one instance."""
        return self._model(self.settings.backend_for(agent))

    def _model(self, backend: BackendSettings) -> ChatModel:
        """One instance per distinct backend, whichever agent (or the pairwise judge) asks for it."""
        backend = backend.model_copy(update={"model": backend.model or self.settings.base_model})
        key = backend.model_dump_json()  # an unset model and base_model named explicitly are one instance
        if key not in self._models:
            from promptloop.agents.llm.factory import build_chat_model

            model = build_chat_model(backend, self.settings)
            if hasattr(model, "in_use"):  # a served vLLM keeps the adapters of unfinished shared jobs loaded
                from promptloop.store.claims import adapters_in_use

                model.in_use = lambda: adapters_in_use(self.engine)
            self._models[key] = model
        return self._models[key]

    @cached_property
    def pairwise_judge(self) -> ChatModel | None:
        """The ``eval.judge`` model, or None when none is configured."""
        backend = self.settings.eval.judge
        return self._model(backend) if backend is not None else None

    def pairwise(self, prompts: Sequence[str], candidate: Sequence[str], champion: Sequence[str]) -> dict | None:
        """Win / tie / loss of ``candidate``'s outputs against ``champion``'s under the pairwise judge; None = off."""
        judge = self.pairwise_judge
        if judge is None:
            return None
        from promptloop.evaluation.pairwise import compare

        return compare(judge, prompts, candidate, champion, controls=self.settings.sampling.judge,
                       max_new_tokens=self.settings.eval.judge_max_new_tokens).to_dict()

    @cached_property
    def embedder(self) -> Embedder:
        from promptloop.agents.embedder import Embedder

        return Embedder(self.settings.embedder_model, device=self.settings.device)

    @cached_property
    def guard(self) -> SafetyGuard:
        from promptloop.agents.safety.guard import SafetyGuard

        g = self.settings.guard
        return SafetyGuard(self.embedder, g, llm=self.model_for("guard") if g.use_llm else None,
                           controls=self.settings.sampling.guard)

    @cached_property
    def critic(self) -> TextCritic:
        return self.make_critic(use_llm=self.settings.critic.use_llm)

    @cached_property
    def deterministic_critic(self) -> TextCritic:
        """The critic without the LLM pass: same text, same scores; what evaluation uses."""
        return self.make_critic(use_llm=False)

    def make_critic(self, *, use_llm: bool) -> TextCritic:
        from promptloop.agents.text_critic import TextCritic

        c, r = self.settings.critic, self.settings.rewrite
        return TextCritic(self.embedder, self.guard, self.model_for("critic") if use_llm else None,
                          min_words=r.target_words_min, max_words=r.target_words_max,
                          llm_weight=c.llm_weight if use_llm else 0.0, llm_retries=c.llm_retries,
                          breaker_window=c.llm_breaker_window, breaker_min_valid=c.llm_breaker_min_valid,
                          controls=self.settings.sampling.critic, degenerate_repetition=c.degenerate_repetition,
                          degenerate_length=c.degenerate_length, refiner=lambda: self.model_for("critic"),
                          llm_max_new_tokens=c.llm_max_new_tokens,
                          memory=self.critique_capability() if use_llm and c.llm_capability_memory else None)

    def critique_capability(self) -> CapabilityRecord:
        """The store's verdict on whether the critic's model writes valid JSON critiques with this template,
        budget and breaker; any change to those is a new probe, measured again."""
        import hashlib

        from promptloop.agents.rewriter import template
        from promptloop.store.capabilities import CapabilityRecord

        c = self.settings.critic
        probe = hashlib.sha256(json.dumps([template("critique.txt"), c.llm_max_new_tokens, c.llm_retries,
                                           c.llm_breaker_window, c.llm_breaker_min_valid,
                                           self.settings.sampling.critic.model_dump()],
                                          sort_keys=True, default=str).encode()).hexdigest()[:16]
        return CapabilityRecord(self.engine, self.settings.backend_for("critic").identity(self.settings.base_model),
                                "json_critique", probe)

    @cached_property
    def reference_lm(self) -> ReferenceLM:
        """The base model, frozen and without adapters: fluency in evaluation, never a training signal."""
        from promptloop.agents.llm.prepare import prepare_model
        from promptloop.agents.llm.reference import ReferenceLM

        return ReferenceLM(prepare_model(self.settings.base_model, self.settings.models_dir,
                                         show_progress=False).path, device=self.settings.device)

    @cached_property
    def judge(self) -> RewardJudge:
        from promptloop.agents.judge import RewardJudge

        return RewardJudge(self.settings.judge.weights)

    def rewriter(self, adapter: str | None = None, *, with_model: bool = True, agent: str = "rewriter") -> Rewriter:
        """The rewriter from Settings on ``agent``'s model (``teacher``: the served teacher); ``with_model=False``
        gives only its prompt template (no model load)."""
        from promptloop.agents.rewriter import Rewriter

        r = self.settings.rewrite
        return Rewriter(self.model_for(agent) if with_model else None, min_words=r.target_words_min,
                        max_words=r.target_words_max, adapter=adapter)

    def sampling(self, **overrides: Any) -> SamplingParams:
        """Sampling parameters from the generation settings (``overrides`` that are None keep the setting)."""
        return self.rewrite_context(**overrides).sampling()

    def resolve_model_version(self, version: str | None) -> str | None:
        """Load the rewriter version ``version`` names (store.versions.rewriter_version) into the shared chat
        model and return its adapter name; None for the base model."""
        from promptloop.store.versions import rewriter_version

        row = rewriter_version(self.engine, version)
        if row is None or not row.adapter_path:
            return None
        self.chat_model.load_adapter(row.name, row.adapter_path)
        return row.name

    # --- video -----------------------------------------------------------------------------
    def renderer(self, model: str | None = None) -> DiffusersRenderer:
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
        from promptloop.store.versions import artifact_folder

        return artifact_folder(self.engine, ref, algorithm)

    @cached_property
    def render_cache(self) -> RenderCache:
        from promptloop.agents.video.cache import RenderCache

        return RenderCache(self.renderer(), self.engine)

    @cached_property
    def video_scorer(self) -> VideoScorer:
        from promptloop.agents.llm.device import pick_device
        from promptloop.agents.video.alignment import TextVideoAlignment
        from promptloop.agents.video.nsfw import NSFWScorer
        from promptloop.agents.video.scorer import VideoScorer

        v = self.settings.video
        vlm = None
        if v.vlm is not None:
            from promptloop.agents.llm.openai_backend import OpenAIChatModel
            from promptloop.agents.video.vlm_judge import VLMJudge

            b = v.vlm
            client = OpenAIChatModel(b.base_url, b.model or "default", api_key=b.bearer_token(), timeout=b.timeout,
                                     max_retries=b.max_retries, concurrency=b.concurrency, extra_body=b.extra_body)
            vlm = VLMJudge(client, frames=v.metric_frames)
        device = "cuda" if self.settings.device in ("auto", "cuda") and pick_device("auto") == "cuda" else "cpu"
        extra = [self.video_critic(v.critic)] if v.critic else []
        return VideoScorer(alignment=TextVideoAlignment(v.alignment_model, frames=v.metric_frames, device=device),
                           nsfw=NSFWScorer(frames=v.metric_frames) if v.nsfw else None, vlm=vlm, extra=extra)

    def video_critic(self, ref: str) -> Any:
        """A trained video critic by version name (``promptloop train critic``) or folder.

        The kind follows the folder's contents (the ridge critic's ``critic.npz``
        or a fine-tuned VLM's ``config.json``); that rule lives in the learners.
        """
        from promptloop.learners.vlm_critic import load_video_critic

        return load_video_critic(Path(self.artifact_folder(ref, "critic")), embedder=lambda: self.embedder)

    @cached_property
    def video_feedback(self) -> VideoFeedback:
        from promptloop.agents.video.feedback import VideoFeedback

        return VideoFeedback(self.render_cache, self.video_scorer, self.settings.video.weights)

    # --- graphs ----------------------------------------------------------------------------
    def rewrite_agents(self, *, record_traces: bool = True, default_version: str | None = None,
                       with_teacher: bool = False) -> RewriteAgents:
        """The agents of the rewrite graph; ``default_version`` (e.g. 'champion') is used when a run names none.

        ``with_teacher`` adds the served teacher (``backends.teacher``) as a second rewriter.
        """
        from promptloop.graphs.rewrite import RewriteAgents
        from promptloop.graphs.tracing import TraceRecorder

        adapter = self.resolve_model_version(default_version) if default_version else None
        teacher = self.rewriter(agent="teacher") if with_teacher else None
        return RewriteAgents(guard=self.guard, rewriter=self.rewriter(adapter), critic=self.critic, judge=self.judge,
                             recorder=TraceRecorder(self.engine if record_traces else None), teacher=teacher)

    @cached_property
    def rewrite_graph(self) -> CompiledStateGraph:
        from promptloop.graphs.rewrite import build_rewrite_graph

        return build_rewrite_graph(self.rewrite_agents(), checkpointer=self.checkpointer)

    def graph_rewrite(self, prompts: Sequence[str], adapter: str | None, max_new_tokens: int
                      ) -> list[tuple[str, bool]]:
        """(final prompt, refused) per prompt from one run of the rewrite graph with the configured settings:
        what evaluation's red team measures. No traces and no checkpoints (nothing to resume or inspect)."""
        from promptloop.graphs.rewrite import build_rewrite_graph

        graph = build_rewrite_graph(self.rewrite_agents(record_traces=False))
        values = graph.invoke({"items": [{"prompt": p} for p in prompts]},
                              context=self.rewrite_context(model_version=adapter, max_new_tokens=max_new_tokens))
        return [(it.get("final_prompt", ""), bool(it.get("refused"))) for it in values["items"]]

    def rewrite_context(self, **overrides: Any) -> RewriteContext:
        """RewriteContext from Settings, with per-call overrides (None = keep the setting)."""
        from promptloop.graphs.rewrite import RewriteContext

        return RewriteContext.from_settings(self.settings, **overrides)

    def collect_graph(self, kind: str, *, served_teacher: bool = False) -> CompiledStateGraph:
        """The checkpointed collection graph for ``kind`` ('sft', 'pairs' or 'evolve'), with the served teacher."""
        from promptloop.graphs.collect_pairs import build_collect_pairs_graph
        from promptloop.graphs.collect_sft import build_collect_sft_graph
        from promptloop.graphs.evolve import build_evolve_graph

        builders = {"sft": build_collect_sft_graph, "pairs": build_collect_pairs_graph, "evolve": build_evolve_graph}
        if kind not in builders:
            raise PromptloopError(f"unknown collection '{kind}'; expected one of {', '.join(builders)}")
        agents = self.rewrite_agents(with_teacher=served_teacher)
        if kind == "pairs":
            return build_collect_pairs_graph(agents, self.engine, checkpointer=self.checkpointer,
                                             video=lambda: self.video_feedback)
        return builders[kind](agents, self.engine, checkpointer=self.checkpointer)

    def teacher_plan(self, name: str, kind: str, *, split: str = "train", limit: int | None = None
                     ) -> tuple[TeacherPlan, list[Prompt]]:
        """Teacher ``name`` for a collection, and the prompts it covers.

        A recorded set of that name (``teacher import``) wins and brings its
        own prompts; otherwise ``backends.teacher`` serves it on ``split``'s
        prompts. Pairs add the student's own samples as the rejected side.
        """
        from promptloop.graphs.collection import TeacherPlan
        from promptloop.store.repository import select_prompts
        from promptloop.store.teachers import check_name, teacher_rewrites

        check_name(name)
        if kind not in ("sft", "pairs"):
            raise PromptloopError(f"a teacher writes SFT examples or the chosen side of pairs; not '{kind}'")
        try:
            rows = teacher_rewrites(self.engine, name, limit)
        except PromptloopError as exc:  # no recorded set of that name
            if "teacher" not in self.settings.backends:
                raise PromptloopError(f"no teacher '{name}': {exc}, or serve one (backends.teacher)") from None
            return TeacherPlan(name, student=kind == "pairs"), select_prompts(self.engine, split, limit)
        return TeacherPlan(name, given={p.id: rw for p, rw in rows}, student=kind == "pairs"), [p for p, _ in rows]

    def collection_prompts(self, kind: str, *, split: str = "train", limit: int | None = None,
                           teacher: str | None = None) -> tuple[TeacherPlan | None, list[Prompt]]:
        """The prompts a collection will cover (and its teacher plan): known before it starts, so a progress
        display has its total. A recorded teacher brings its own prompts; otherwise ``split``'s first ``limit``."""
        if teacher:
            return self.teacher_plan(teacher, kind, split=split, limit=limit)
        from promptloop.store.repository import select_prompts

        return None, select_prompts(self.engine, split, limit)

    # --- what commands, the loop and the API call (LoopDeps, EvalDeps) -------------------------
    def collect(self, kind: str, *, model_version: str = "base", teacher: str | TeacherPlan | None = None,
                **kwargs: Any) -> CollectionReport:
        """Collection ``kind`` sampled by ``model_version`` (graphs.collection.collect has the arguments).

        ``teacher`` names a recorded set or the served teacher (``teacher_plan``), or is a plan already made
        (its prompts then come as ``prompts``).
        """
        from promptloop.graphs.collection import collect
        from promptloop.store.versions import ensure_version

        plan = teacher or None
        if isinstance(teacher, str):
            plan, kwargs["prompts"] = self.teacher_plan(teacher, kind, split=kwargs.get("split", "train"),
                                                        limit=kwargs.get("limit"))
        adapter = self.resolve_model_version(model_version)
        version_id = ensure_version(self.engine, adapter or "base", self.settings.base_model)
        graph = self.collect_graph(kind, served_teacher=plan is not None and plan.given is None)
        return collect(graph, kind, engine=self.engine, settings=self.settings, adapter=adapter,
                       version_id=version_id, teacher=plan, **kwargs)

    def teacher_reference(self, round_index: int, *, limit: int = 256) -> dict[str, float]:
        """The teacher's own intent recall@1 on the round's accepted teacher rows (evaluation.benches.teacher_rows).

        Training rows, never held-out prompts: what a teacher round's guardrail may fall back to.
        """
        from promptloop.evaluation.benches import distractor_pool, teacher_rows
        from promptloop.evaluation.metrics import mean, per_item

        prompts, targets = teacher_rows(self.engine, round_index, limit)
        if not prompts:
            return {}
        rows = per_item(self.embedder, prompts, targets, pool=distractor_pool(self.engine))
        return {"intent_recall_at_1": round(float(mean([r["intent_recall_at_1"] for r in rows])), 4)}

    def train(self, algorithm: str, cfg: LearnerConfig, on_step: Callable[[int, int, dict], None] | None = None, *,
              data: TrainingData | None = None, callbacks: Sequence[Any] = ()) -> TrainResult:
        """SFT or DPO of the rewriter for ``cfg``'s round: the store's rows, or ``data`` when given (a bench's).

        ``on_step`` gets its progress; ``callbacks`` are TrainerCallbacks added to the trainer.
        """
        from promptloop.learners.dpo import train_dpo
        from promptloop.learners.sft import train_sft

        fn = {"sft": train_sft, "dpo": train_dpo}[algorithm]
        return fn(self.engine, self.settings, cfg, build_messages=self.rewriter(with_model=False).messages_for,
                  data=data, on_step=on_step, callbacks=callbacks)

    def plan_training(self, cfg: LearnerConfig) -> dict:
        """What ``train`` would do for ``cfg`` (data, parent, name, steps), writing nothing."""
        from promptloop.learners.trainer import plan

        return plan(self.engine, self.settings, cfg, build_messages=self.rewriter(with_model=False).messages_for)

    def evaluate(self, systems: Sequence[str], cfg: EvalConfig,
                 progress: Callable[[str], None] | None = None) -> EvalReport:
        from promptloop.evaluation.runner import evaluate

        return evaluate(self, systems, cfg, progress)


@functools.cache
def _served_graph() -> CompiledStateGraph:
    from promptloop.graphs.rewrite import build_rewrite_graph

    return build_rewrite_graph(lambda: Services(Settings()).rewrite_agents(default_version="champion"))


def make_graph() -> CompiledStateGraph:
    """Entry for `langgraph dev` / LangGraph server (langgraph.json: ``promptloop.services:make_graph``).

    The server supplies persistence, so the graph is compiled without a
    checkpointer; it is built once per server process (models load on the
    first run, in a worker thread, once) and reused for every run. It lives
    in the composition root because it builds agents from Settings.
    """
    return _served_graph()
