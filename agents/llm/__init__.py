"""Model backends behind the batched ChatModel contract."""

from promptloop.agents.llm.base import ChatModel, Conversation, Message, SamplingParams
from promptloop.agents.llm.prepare import EMBEDDED_LLMS, ModelNotAvailable, prepare_model

__all__ = ["ChatModel", "Conversation", "Message", "SamplingParams", "EMBEDDED_LLMS", "ModelNotAvailable",
           "prepare_model"]
