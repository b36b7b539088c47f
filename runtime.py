"""What one process shares: settings, the database engine and the loaded models.

Built once by the CLI (or by an app) and passed down, instead of module
globals; each heavy object is created on first use and then reused, so a
process loads the base model once however many agents call it.
"""

from __future__ import annotations

from functools import cached_property

from sqlalchemy.engine import Engine

from promptloop.config import Settings


class Runtime:
    def __init__(self, settings: Settings):
        self.settings = settings

    @cached_property
    def engine(self) -> Engine:
        from promptloop.store.engine import make_engine

        self.settings.ensure_home()
        return make_engine(self.settings.database_url)

    def upgrade_db(self) -> str | None:
        from promptloop.store.migrate import upgrade

        return upgrade(self.engine)

    @cached_property
    def chat_model(self):  # -> TransformersChatModel
        from promptloop.agents.llm.prepare import prepare_model
        from promptloop.agents.llm.transformers_backend import TransformersChatModel

        s = self.settings
        prepared = prepare_model(s.base_model, s.models_dir)
        return TransformersChatModel(prepared.path, device=s.device, dtype=s.dtype,
                                     batch_size=s.generation.batch_size, name=s.base_model)

    @cached_property
    def embedder(self):  # -> Embedder
        from promptloop.agents.embedder import Embedder

        return Embedder(self.settings.embedder_model, device=self.settings.device)

    def rewriter(self, adapter: str | None = None):
        from promptloop.agents.rewriter import Rewriter

        r = self.settings.rewrite
        return Rewriter(self.chat_model, min_words=r.target_words_min, max_words=r.target_words_max,
                        adapter=adapter)

    def sampling(self, **overrides):
        from promptloop.agents.llm.base import SamplingParams

        g = self.settings.generation
        base = dict(max_new_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p,
                    seed=self.settings.seed)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return SamplingParams(**base)
