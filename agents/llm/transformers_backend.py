"""In-process transformers ChatModel: batched, left-padded, n samples per conversation.

The base model is loaded once per instance (and a process keeps one instance
in its Runtime); LoRA adapters of rewriter versions are attached to that same
base by name and switched per call, so moving between versions never
reloads the base weights.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import torch

from promptloop.agents.llm.base import ChatModel, Conversation, SamplingParams
from promptloop.agents.llm.device import pick_device, pick_dtype


class TransformersChatModel(ChatModel):
    def __init__(self, model_path: str | Path, *, device: str = "auto", dtype: str = "auto",
                 batch_size: int = 16, name: str | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.path = str(model_path)
        self.name = name or Path(self.path).name
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.tokenizer.padding_side = "left"  # decoder-only batches must be left-padded
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=self.dtype).to(self.device)
        self.model.eval()
        self.adapters: dict[str, str] = {}
        self._lock = threading.Lock()  # adapter switching and generate share one model

    # --- adapters -----------------------------------------------------------------
    def load_adapter(self, name: str, path: str | Path) -> None:
        """Attach a LoRA adapter under ``name`` (idempotent for the same name and path)."""
        path = str(path)
        if self._already_bound(name, path, self.adapters.get(name)):
            return
        try:
            from peft import PeftModel
        except ImportError as exc:  # pragma: no cover - depends on extras
            raise RuntimeError("loading a LoRA adapter needs peft: pip install 'promptloop[train]'") from exc
        with self._lock:
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(path, adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name)
            self.model.to(self.device).eval()
            self.adapters[name] = path

    # --- generation ---------------------------------------------------------------
    def render(self, conversation: Conversation) -> str:
        return self.tokenizer.apply_chat_template(list(conversation), tokenize=False, add_generation_prompt=True)

    @torch.inference_mode()
    def generate(self, conversations: Sequence[Conversation], params: SamplingParams, *,
                 adapter: str | None = None) -> list[list[str]]:
        if adapter is not None and adapter not in self.adapters:
            raise KeyError(f"adapter '{adapter}' is not loaded; call load_adapter first "
                           f"(loaded: {', '.join(self.adapters) or 'none'})")
        texts = [self.render(c) for c in conversations]
        results: list[list[str]] = []
        with self._lock:
            for start in range(0, len(texts), self.batch_size):
                chunk = texts[start:start + self.batch_size]
                if params.seed is not None:
                    torch.manual_seed(params.seed + start)
                results.extend(self._generate_chunk(chunk, params, adapter))
        return results

    def _generate_chunk(self, texts: list[str], params: SamplingParams, adapter: str | None) -> list[list[str]]:
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        kwargs = dict(max_new_tokens=params.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id)
        if params.greedy:
            kwargs.update(do_sample=False)
        else:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
        out = self._run(lambda: self._generate_shared_prefill(enc, params.n, kwargs), adapter)
        new_tokens = out[:, enc["input_ids"].shape[1]:]
        decoded = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        n = params.n
        return [[d.strip() for d in decoded[i * n:(i + 1) * n]] for i in range(len(texts))]

    def _generate_shared_prefill(self, enc, n: int, kwargs: dict) -> torch.Tensor:  # noqa: ANN001
        """Prefill each prompt once, then sample n continuations from copies of its KV cache.

        ``generate(num_return_sequences=n)`` would repeat every prompt n times
        before the forward pass, so the (long, instruction-heavy) prefill cost
        is paid n times. Here it is paid once; only the last prompt token is
        left for generate, which continues from the repeated cache.
        """
        from transformers import DynamicCache

        ids, mask = enc["input_ids"], enc["attention_mask"]
        cache = None
        if ids.shape[1] > 1:
            cache = DynamicCache(config=self.model.config)
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: positions start at each row's first token
            self.model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=position_ids[:, :-1],
                       past_key_values=cache, use_cache=True)
            if n > 1:
                cache.batch_repeat_interleave(n)
        if n > 1:
            ids, mask = ids.repeat_interleave(n, dim=0), mask.repeat_interleave(n, dim=0)
        return self.model.generate(input_ids=ids, attention_mask=mask, past_key_values=cache, **kwargs)

    def _run(self, fn, adapter: str | None):  # noqa: ANN001
        """Call ``fn`` with the requested adapter active (None = the bare base model)."""
        if not self.adapters:
            return fn()
        if adapter is None:
            with self.model.disable_adapter():
                return fn()
        self.model.set_adapter(adapter)
        return fn()
