"""In-process transformers ChatModel: batched, shared-prefix prefill, n samples per conversation, own decode loop.

The base model is loaded once per instance (and a process keeps one instance
in its Runtime); LoRA adapters of rewriter versions are attached to that same
base by name and switched per call, so moving between versions never
reloads the base weights. With ``quantize`` resolved to int8 (CPU), each
version decodes on its own merged weight-only int8 copy instead
(``quantize.py``), and the fp32 model with its adapters stays the source
of those copies.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import DynamicCache

from promptloop.agents.llm.base import ChatModel, Conversation, SamplingParams, cut_at_stop
from promptloop.agents.llm.decode_step import decode_step
from promptloop.agents.llm.device import pick_device, pick_dtype
from promptloop.agents.llm.kv_cache import ReservedLayer, reserved_cache
from promptloop.agents.llm.quantize import Quantize, int8_copy, resolve
from promptloop.agents.llm.sampling import next_tokens, penalties

# int8 copies kept at once: the base and the versions a loop compares (champion, candidate, parent) fit
INT8_COPIES = 4
# a common prefix shorter than this is run again rather than copied (the copy is not worth its bookkeeping)
MIN_REUSED_PREFIX = 16


def _in_place(cache: DynamicCache) -> bool:
    """Every layer of ``cache`` is a ReservedLayer (what prefix reuse reads from and writes into)."""
    return all(isinstance(layer, ReservedLayer) for layer in cache.layers)


class TransformersChatModel(ChatModel):
    def __init__(self, model_path: str | Path, *, device: str = "auto", dtype: str = "auto",
                 batch_size: int = 16, name: str | None = None, quantize: Quantize = "none"):
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
        self.quantize = resolve(quantize, self.device, self.dtype)
        # int8 copies per adapter (None = the bare base), most recently used last; each is a merged, quantised
        # copy (~250 MB for the 135M model), so only a few are kept
        self._int8: dict[str | None, torch.nn.Module] = {}
        # the last shared prefix each decoding module ran, with its keys and values: the next call's prefix
        # (the same instruction, another request) starts from the longest part they agree on
        self._prefixes: dict[tuple[str | None, str], tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]]] = {}
        self.prefix_reused = 0  # tokens of the last call's prefix read from an earlier call (benches, tests)
        # decode steps of a Llama int8 copy run decode_step's fused step (False: the transformers forward, for
        # the bench that compares them)
        self.fused_step = True
        eos = self.model.generation_config.eos_token_id
        self.stop_ids = torch.tensor(sorted({*(eos if isinstance(eos, list) else [eos]),
                                             self.tokenizer.eos_token_id} - {None}))
        # transformers 5.x renames forward's past_key_values to cache (the old name warns on every call and goes
        # away in 5.40); ask the model which one it takes, so the tested range (>=5.0) works without the warning
        self._cache_kw = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        self.adapters: dict[str, str] = {}
        self._lock = threading.Lock()  # adapter switching and generate share one model
        self._stoppers: dict[tuple[str, ...], Any] = {}  # StopStringCriteria per stop list (its tables cost)
        self._line_breaks: dict[int, bool] = {}  # whether a token's text holds a line break (SamplingParams.until)

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
                generator = None
                if params.seed is not None:
                    generator = torch.Generator(device=self.device).manual_seed(params.seed + start)
                rows = self.tokenizer(texts[start:start + self.batch_size], add_special_tokens=False)["input_ids"]
                with self._decoding(adapter) as model:
                    key = (adapter if self.adapters else None, self.quantize)
                    tokens = self._decode(model, *self._prefill(model, rows, params, key), params, generator)
                decoded = [cut_at_stop(d, params.stop)
                           for d in self.tokenizer.batch_decode(tokens, skip_special_tokens=True)]
                n = params.n
                results.extend([d.strip() for d in decoded[i * n:(i + 1) * n]] for i in range(len(rows)))
        return results

    def _prefill(self, model: torch.nn.Module, rows: list[list[int]], params: SamplingParams,
                 key: tuple[str | None, str] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, DynamicCache]:
        """Prefill what the prompts share once, each prompt's own tail once, and copy the cache for n samples.

        Rewriter, critic and guard prompts are mostly one long instruction
        with a short user part, so a batch's prompts share a long token
        prefix. It is run once (batch 1) and its KV cache repeated; each
        prompt's tail is then prefilled against it, and cache and last-token
        logits are repeated n times for sampling, where
        ``generate(num_return_sequences=n)`` over left-padded prompts would
        redo the whole prompt for every row and sample. Layout per row: shared
        prefix, padding, own tail; position ids follow the attention mask, as
        ``generate`` derives them.
        The shared prefix itself is mostly the agent's instruction, the same
        from one call to the next, so the keys and values of the last prefix
        run under ``key`` (decoding module) are kept and the part a new prefix
        agrees on is copied in rather than recomputed: prefill is compute-bound
        on CPU (~2 ms a token here), and the rewriter's instruction is ~200
        tokens of a one-prompt rewrite.
        Returns the last-token logits, attention mask, next position id per
        row, and the cache.
        """
        shortest = min(len(r) for r in rows)
        shared = 0
        while shared < shortest - 1 and all(r[shared] == rows[0][shared] for r in rows):
            shared += 1
        tails = [r[shared:] for r in rows]
        width = max(len(t) for t in tails)
        pad = self.tokenizer.pad_token_id
        tail_ids = torch.tensor([[pad] * (width - len(t)) + t for t in tails], device=self.device)
        tail_mask = torch.tensor([[0] * (width - len(t)) + [1] * len(t) for t in tails])
        mask = torch.cat([torch.ones(len(rows), shared, dtype=torch.long), tail_mask], dim=1).to(self.device)
        cache = reserved_cache(self.model.config, shared + width + params.max_new_tokens)
        if shared:
            reused = self._reuse_prefix(key, rows[0][:shared], cache)
            prefix = torch.tensor([rows[0][reused:shared]], device=self.device)
            model(input_ids=prefix, **{self._cache_kw: cache}, use_cache=True, logits_to_keep=1)
            self._keep_prefix(key, rows[0][:shared], cache)
            if len(rows) > 1:
                cache.batch_repeat_interleave(len(rows))
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
        logits = model(input_ids=tail_ids, attention_mask=mask, position_ids=position_ids,
                       **{self._cache_kw: cache}, use_cache=True, logits_to_keep=1).logits[:, -1]
        positions = mask.sum(-1)
        if params.n > 1:
            cache.batch_repeat_interleave(params.n)
            logits, mask, positions = (t.repeat_interleave(params.n, dim=0) for t in (logits, mask, positions))
        return logits, mask, positions, cache

    def _decode(self, model: torch.nn.Module, logits: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                cache: DynamicCache, params: SamplingParams, generator: torch.Generator | None) -> list[list[int]]:
        """Sample up to max_new_tokens per row, dropping rows that ended from the batch as they accumulate.

        ``generate`` keeps decoding a row after its end token until the
        longest row of the batch ends; at 128 rows that was about a quarter
        of the decoded positions. Rows that ended are cut from the KV cache
        once they make up an eighth of the batch, so a cut (a copy of the
        cache) is paid at most a few times per call.
        Returns each row's new token ids, without the end token.
        """
        out: list[list[int]] = [[] for _ in range(logits.shape[0])]
        live = torch.arange(logits.shape[0])  # the output row each batch row writes to
        ended = torch.zeros(logits.shape[0], dtype=torch.bool)
        penalise, stopper = penalties(params), self._stopper(params.stop)
        one_token = decode_step(model, self._cache_kw, fused=self.fused_step)
        # the tokens generated so far (penalties and stop strings look at these, never at the prompt)
        history = torch.empty(logits.shape[0], 0, dtype=torch.long, device=self.device)
        for step in range(params.max_new_tokens):
            if penalise is not None:
                logits = penalise(history, logits)
            tokens = next_tokens(logits, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
                                 min_p=params.min_p, generator=generator)
            if penalise is not None or stopper is not None:
                history = torch.cat([history, tokens[:, None]], dim=1)
            host = tokens.cpu()
            stop = torch.isin(host, self.stop_ids)  # end tokens are not text; a stop string's last token is
            for row, token, quiet in zip(live.tolist(), host.tolist(), (ended | stop).tolist(), strict=True):
                if not quiet:
                    out[row].append(token)
            ended |= stop
            if params.until is not None:
                ended |= self._text_done(params.until, out, live, host, ended)
            if stopper is not None:
                ended |= stopper(history, None).cpu()
            if ended.all() or step == params.max_new_tokens - 1:
                break
            if ended.sum() >= max(1, len(live) // 8):
                keep = (~ended).nonzero().squeeze(-1)
                live, ended = live[keep], ended[keep]
                keep = keep.to(self.device)  # tokens, mask, positions and the cache live on the model's device
                cache.batch_select_indices(keep)
                tokens, mask, positions, history = tokens[keep], mask[keep], positions[keep], history[keep]
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            logits = one_token(tokens, mask, positions, cache)
            positions = positions + 1
        return out

    def _text_done(self, until: Callable[[str], bool], out: list[list[int]], live: torch.Tensor, host: torch.Tensor,
                   ended: torch.Tensor) -> torch.Tensor:
        """Rows whose text ``until`` says the caller has all it will use of, asked when a row's new token
        carries a line break (a paragraph can only end there)."""
        done = torch.zeros_like(ended)
        for i, (row, token, over) in enumerate(zip(live.tolist(), host.tolist(), ended.tolist(), strict=True)):
            breaks = self._line_breaks.get(token)
            if breaks is None:  # learnt per token as met (~3 us a decode; the whole vocabulary takes 0.6 s)
                breaks = self._line_breaks[token] = "\n" in self.tokenizer.decode([token])
            if breaks and not over:
                done[i] = until(self.tokenizer.decode(out[row], skip_special_tokens=True))
        return done

    def _reuse_prefix(self, key: tuple[str | None, str] | None, prefix: list[int], cache: DynamicCache) -> int:
        """Copy into ``cache`` the keys and values of the longest start of ``prefix`` an earlier call computed.

        Keys and values at a position depend only on the tokens up to it
        (causal attention), so any common start of two prefixes has the same
        cache. At least one token is left to run, for the logits' sake.
        Returns the number of tokens copied.
        """
        self.prefix_reused = 0
        kept = self._prefixes.get(key) if key is not None else None
        if kept is None or not _in_place(cache):
            return 0
        tokens, kv = kept
        common = 0
        limit = min(len(tokens), len(prefix) - 1)
        while common < limit and tokens[common] == prefix[common]:
            common += 1
        if common < MIN_REUSED_PREFIX:
            return 0
        for i, (k, v) in enumerate(kv):
            cache.update(k[:, :, :common], v[:, :, :common], i)
        self.prefix_reused = common
        return common

    def _keep_prefix(self, key: tuple[str | None, str] | None, prefix: list[int], cache: DynamicCache) -> None:
        if key is None or not _in_place(cache):
            return
        kept = self._prefixes.pop(key, None)
        if kept is not None and kept[0] == prefix:  # the same prefix again (one instruction, many batches)
            self._prefixes[key] = kept
            return
        while len(self._prefixes) >= INT8_COPIES + 1:  # one per decoding module kept (int8 copies, fp32 model)
            self._prefixes.pop(next(iter(self._prefixes)))
        self._prefixes[key] = (list(prefix), [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers])

    def _stopper(self, stop: list[str]) -> Any:
        """transformers' ``StopStringCriteria`` for these strings (built once per list); None without any."""
        if not stop:
            return None
        key = tuple(stop)
        if key not in self._stoppers:
            from transformers import StopStringCriteria

            self._stoppers[key] = StopStringCriteria(self.tokenizer, list(key))
        return self._stoppers[key]

    @contextmanager
    def _decoding(self, adapter: str | None) -> Iterator[torch.nn.Module]:
        """The module that decodes for ``adapter`` (None = the bare base): its int8 copy, or the shared model with
        that adapter active (or all adapters disabled) for the duration."""
        if self.quantize == "int8":
            model = self._int8.pop(adapter, None)
            if model is None:
                model = int8_copy(self.model, adapter if self.adapters else None)
                while len(self._int8) >= INT8_COPIES:
                    self._int8.pop(next(iter(self._int8)))
            self._int8[adapter] = model
            yield model
        elif not self.adapters:
            yield self.model
        elif adapter is None:
            with self.model.disable_adapter():
                yield self.model
        else:
            self.model.set_adapter(adapter)
            yield self.model
