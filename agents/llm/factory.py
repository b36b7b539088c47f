"""Build the ChatModel a BackendSettings describes."""

from __future__ import annotations

from promptloop.agents.llm.base import ChatModel
from promptloop.config import BackendSettings, Settings


def build_chat_model(backend: BackendSettings, settings: Settings) -> ChatModel:
    """``backend.model`` is resolved by the caller (Runtime.model_for fills in base_model)."""
    if backend.kind == "openai":
        from promptloop.agents.llm.openai_backend import OpenAIChatModel

        return OpenAIChatModel(backend.base_url, backend.model,
                               api_key=backend.bearer_token(), timeout=backend.timeout,
                               max_retries=backend.max_retries, concurrency=backend.concurrency,
                               extra_body=backend.extra_body, adapter_loading=backend.adapter_loading,
                               max_loras=backend.max_loras)
    from promptloop.agents.llm.prepare import prepare_model

    prepared = prepare_model(backend.model, settings.models_dir)
    if backend.kind == "vllm":
        from promptloop.agents.llm.vllm_backend import VLLMChatModel

        return VLLMChatModel(prepared.path, dtype=settings.dtype, seed=settings.seed,
                             name=backend.model)
    from promptloop.agents.llm.transformers_backend import TransformersChatModel

    return TransformersChatModel(prepared.path, device=settings.device, dtype=settings.dtype,
                                 batch_size=settings.generation.batch_size, name=backend.model,
                                 quantize=settings.quantize)
