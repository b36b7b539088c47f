"""In-process transformers ChatModel: batched, shared-prefix prefill, n samples per conversation.

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
        rows = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        kwargs = dict(max_new_tokens=params.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id)
        if params.greedy:
            kwargs.update(do_sample=False)
        else:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
        out, prompt_len = self._run(lambda: self._generate_shared_prefill(rows, params.n, kwargs), adapter)
        decoded = self.tokenizer.batch_decode(out[:, prompt_len:], skip_special_tokens=True)
        n = params.n
        return [[d.strip() for d in decoded[i * n:(i + 1) * n]] for i in range(len(texts))]

    def _generate_shared_prefill(self, rows: list[list[int]], n: int, kwargs: dict) -> tuple[torch.Tensor, int]:
        """Prefill what the prompts share once, each prompt's own tail once, then sample n continuations each.

        Rewriter, critic and guard prompts are mostly one long instruction
        with a short user part, so a batch's prompts share a long token
        prefix. It is run once (batch 1) and its KV cache repeated; each
        prompt's tail is then prefilled against it, and the cache repeated n
        times for sampling, where ``generate(num_return_sequences=n)`` over
        left-padded prompts would redo the whole prompt for every row and
        sample. Layout per row: shared prefix, padding, own tail; position ids
        follow the attention mask, as ``generate`` derives them.
        Returns the generated ids and the prompt length to cut them at.
        """
        from transformers import DynamicCache

        shortest = min(len(r) for r in rows)
        shared = 0
        while shared < shortest - 1 and all(r[shared] == rows[0][shared] for r in rows):
            shared += 1
        tails = [r[shared:] for r in rows]
        width = max(len(t) for t in tails)
        pad = self.tokenizer.pad_token_id
        tail_ids = torch.tensor([[pad] * (width - len(t)) + t for t in tails])
        tail_mask = torch.tensor([[0] * (width - len(t)) + [1] * len(t) for t in tails])
        ids = torch.cat([torch.tensor(rows[0][:shared]).expand(len(rows), shared), tail_ids], dim=1).to(self.device)
        mask = torch.cat([torch.ones(len(rows), shared, dtype=torch.long), tail_mask], dim=1).to(self.device)
        cache = None
        if ids.shape[1] > 1:
            cache = DynamicCache(config=self.model.config)
            if shared:
                self.model(input_ids=ids[:1, :shared], past_key_values=cache, use_cache=True)
                if len(rows) > 1:
                    cache.batch_repeat_interleave(len(rows))
            if width > 1:
                position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
                self.model(input_ids=ids[:, shared:-1], attention_mask=mask[:, :-1],
                           position_ids=position_ids[:, shared:-1], past_key_values=cache, use_cache=True)
            if n > 1:
                cache.batch_repeat_interleave(n)
        if n > 1:
            ids, mask = ids.repeat_interleave(n, dim=0), mask.repeat_interleave(n, dim=0)
        return self.model.generate(input_ids=ids, attention_mask=mask, past_key_values=cache, **kwargs), ids.shape[1]

    def _run(self, fn, adapter: str | None):  # noqa: ANN001
        """Call ``fn`` with the requested adapter active (None = the bare base model)."""
        if not self.adapters:
            return fn()
        if adapter is None:
            with self.model.disable_adapter():
                return fn()
        self.model.set_adapter(adapter)
        return fn()
