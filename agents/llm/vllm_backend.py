"""In-process vLLM ChatModel (extra ``[vllm]``, CUDA only).

Written against vLLM's documented offline API (``vllm.LLM.chat`` with a list
of conversations, ``SamplingParams(n=...)``, ``LoRARequest(name, id, path)``).
vLLM cannot be installed on the CPU machines this project is developed and
tested on, so this module is import-guarded and exercised only where vLLM is
present; the served path (``vllm serve`` + OpenAIChatModel) is the tested way
to use vLLM from promptloop.

Every rewriter version gets its own LoRARequest name *and* integer id: vLLM
caches adapters by id, so reusing an id for a new version would silently
serve the old weights.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from pathlib import Path

from promptloop.agents.llm.base import ChatModel, Conversation, SamplingParams
from promptloop.errors import PromptloopError

log = logging.getLogger(__name__)


class VLLMChatModel(ChatModel):
    def __init__(self, model_path: str | Path, *, dtype: str = "auto", seed: int = 0, max_lora_rank: int = 64,
                 max_loras: int = 4, gpu_memory_utilization: float = 0.85, tensor_parallel_size: int = 1,
                 max_model_len: int | None = 4096, name: str | None = None):
        try:
            from vllm import LLM
        except ImportError as exc:
            raise PromptloopError("the vllm backend needs vLLM on a CUDA machine: pip install 'promptloop[vllm]' "
                                  "(or serve the model with `vllm serve` and use backend 'openai')") from exc
        self.path = str(model_path)
        self.name = name or Path(self.path).name
        self.llm = LLM(model=self.path, dtype=dtype, seed=seed, enable_lora=True, max_lora_rank=max_lora_rank,
                       max_loras=max_loras, gpu_memory_utilization=gpu_memory_utilization,
                       tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len)
        self.adapters: dict[str, object] = {}  # name -> LoRARequest
        self._ids = itertools.count(1)

    def load_adapter(self, name: str, path: str | Path) -> None:
        from vllm.lora.request import LoRARequest

        path = str(path)
        current = self.adapters.get(name)
        if self._already_bound(name, path, current.lora_path if current is not None else None):
            return
        self.adapters[name] = LoRARequest(name, next(self._ids), path)

    def generate(self, conversations: Sequence[Conversation], params: SamplingParams, *,
                 adapter: str | None = None) -> list[list[str]]:
        if adapter is not None and adapter not in self.adapters:
            raise KeyError(f"adapter '{adapter}' is not loaded; call load_adapter first")
        outputs = self.llm.chat([list(c) for c in conversations], self._sampling(params),
                                lora_request=self.adapters.get(adapter) if adapter else None, use_tqdm=False)
        return [[o.text.strip() for o in out.outputs] for out in outputs]

    @staticmethod
    def _sampling(params: SamplingParams):
        from vllm import SamplingParams as VLLMSamplingParams

        kwargs = dict(n=params.n, max_tokens=params.max_new_tokens, temperature=params.temperature,
                      top_p=params.top_p, seed=params.seed, top_k=params.top_k or -1, min_p=params.min_p,
                      repetition_penalty=params.repetition_penalty, stop=list(params.stop) or None)
        if params.no_repeat_ngram_size:
            log.warning("no_repeat_ngram_size works in process only; vLLM generates without it")
        if params.json_schema is not None:
            try:  # vLLM >= 0.11
                from vllm.sampling_params import StructuredOutputsParams

                kwargs["structured_outputs"] = StructuredOutputsParams(json=params.json_schema)
            except ImportError:  # older releases
                from vllm.sampling_params import GuidedDecodingParams

                kwargs["guided_decoding"] = GuidedDecodingParams(json=params.json_schema)
        return VLLMSamplingParams(**kwargs)
