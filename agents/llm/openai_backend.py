"""ChatModel over any server that speaks OpenAI's ``/v1/chat/completions``.

``vllm serve``, ``transformers serve``, llama.cpp's server and hosted APIs all
speak it, but each honours a different subset: some ignore ``n`` (we top the
choices up with more requests), some reject ``response_format`` (we drop it
and remember), some rate-limit (we back off and retry). Conversations go out
concurrently, bounded by ``concurrency``, so a server with continuous
batching (vLLM) sees a full batch instead of one request at a time.

A served vLLM switches rewriter versions at run time: ``load_adapter`` asks
the server to load the version's LoRA (vLLM's ``/v1/load_lora_adapter``,
enabled by ``VLLM_ALLOW_RUNTIME_LORA_UPDATING``) under a name derived from the
version and its weights, so every worker and every restart asks for the same
name; generation then names the adapter as the request's ``model``.

Several workers share one server. vLLM answers a second load of a name with
400 "has already been loaded": that is success (somebody loaded it). A worker
never unloads an adapter it did not load; it unloads its own only at the
server's LoRA limit (``max_loras``), least recently used first, and never one
that an unfinished shared job samples with (``in_use``). When another worker
unloaded an adapter this one uses, vLLM answers 404 and the adapter is loaded
again. With vLLM's filesystem resolver (``adapter_loading="resolver"``) the
server loads the folder a request names by itself, and workers load nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from promptloop.agents.llm.base import ChatModel, Conversation, SamplingParams, cut_at_stop
from promptloop.errors import PromptloopError, redact

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def response_format(schema: dict) -> dict:
    """OpenAI's structured-output request field for a JSON schema (vLLM and most servers accept it)."""
    return {"type": "json_schema", "json_schema": {"name": schema.get("title", "answer"), "schema": schema,
                                                   "strict": False}}


EXTENSION_FIELDS = frozenset({"top_k", "min_p", "repetition_penalty"})


def extensions(params: SamplingParams) -> dict[str, Any]:
    """vLLM's extra sampling fields of the chat API, only those set away from their neutral value."""
    out: dict[str, Any] = {}
    if params.top_k:
        out["top_k"] = params.top_k
    if params.min_p:
        out["min_p"] = params.min_p
    if params.repetition_penalty != 1.0:
        out["repetition_penalty"] = params.repetition_penalty
    return out


class ServerError(PromptloopError, RuntimeError):
    """The server answered with an error that retrying will not fix, or kept failing past the retries."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(redact(message))  # a base URL with user:password@ must not reach a log or a trace
        self.status = status


def served_name(version: str, path: str, loading: str = "api") -> str:
    """The adapter's name on the server: the version's name and a digest of its weights (the same for every
    worker and restart; a reused version name with other weights gets another name); under the filesystem
    resolver, the adapter folder's own name (what the resolver looks up)."""
    folder = Path(path)
    if loading == "resolver":
        return folder.name
    h = hashlib.sha256()
    for part in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
        if (folder / part).is_file():
            h.update((folder / part).read_bytes())
    if h.digest() == hashlib.sha256().digest():  # nothing on this machine to hash (a path on the server's disk)
        h.update(str(folder).encode())
    return f"{version}-{h.hexdigest()[:8]}"


class OpenAIChatModel(ChatModel):
    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout: float = 120.0,
                 max_retries: int = 4, backoff: float = 0.5, concurrency: int = 8,
                 extra_body: dict[str, Any] | None = None, name: str | None = None,
                 transport: httpx.BaseTransport | None = None, adapter_loading: str = "api",
                 max_loras: int | None = None, in_use: Callable[[], set[str]] | None = None):
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.where = redact(self.base_url)  # what messages name: the URL without user:password@
        self.model = model
        self.name = name or model
        self.max_retries = max_retries
        self.backoff = backoff
        self.concurrency = concurrency
        self.extra_body = dict(extra_body or {})
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout,
                                   limits=httpx.Limits(max_connections=concurrency), transport=transport)
        self.adapters: dict[str, str] = {}  # version name -> adapter folder, usable by this client
        self.served: dict[str, str] = {}  # version name -> the adapter's name on the server
        self.owned: OrderedDict[str, None] = OrderedDict()  # served names this client loaded, least recent first
        self.adapter_loading = adapter_loading
        self.max_loras = max_loras
        self.in_use = in_use or (lambda: set())  # version names unfinished shared jobs sample with
        self.structured_output: bool | None = None  # unknown until the server accepts or rejects it
        self.sampling_extensions: bool | None = None  # top_k / min_p / repetition_penalty: the same
        self.no_repeat_warned = False
        self.requests = 0
        self._lock = threading.Lock()

    # --- adapters (served vLLM) ----------------------------------------------------
    def load_adapter(self, name: str, path: str | Path) -> None:
        """Make rewriter version ``name`` (adapter folder ``path``) usable by ``generate(..., adapter=name)``."""
        path = str(path)
        if self._already_bound(name, path, self.adapters.get(name)):
            return
        with self._lock:
            served = served_name(name, path, self.adapter_loading)
            if self.adapter_loading == "api":
                self._make_room(served)
                self._load(served, path)
            self.adapters[name] = path
            self.served[name] = served

    def _load(self, served: str, path: str) -> None:
        """POST the load; vLLM's 400 "has already been loaded" means another worker (or an earlier run of this
        one) holds it, which is as good as loading it, but then it is not this client's to unload."""
        try:
            self._post("/load_lora_adapter", {"lora_name": served, "lora_path": path}, expect_json=False)
        except ServerError as exc:
            if exc.status == 400 and "has already been loaded" in str(exc):
                return
            raise
        self.owned[served] = None

    def _make_room(self, served: str) -> None:
        """At the server's LoRA limit, unload the least recently used adapter this client loaded that no
        unfinished shared job uses; never another worker's."""
        if self.max_loras is None:
            return
        loaded = self._served_adapters()
        if served in loaded or len(loaded) < self.max_loras:
            return
        busy = {self.served[v] for v in self.in_use() if v in self.served} | {served}
        for old in list(self.owned):
            if old in busy:
                continue
            self._unload(old)
            return
        log.warning("%s holds %d adapters (max_loras %d) and none this worker loaded is free to unload; loading "
                    "%s anyway", self.where, len(loaded), self.max_loras, served)

    def _unload(self, served: str) -> None:
        try:
            self._post("/unload_lora_adapter", {"lora_name": served}, expect_json=False)
        except ServerError as exc:
            if exc.status != 404:  # 404 "cannot be found": somebody unloaded it already
                raise
        self.owned.pop(served, None)
        for version, s in list(self.served.items()):
            if s == served:
                del self.served[version]
                del self.adapters[version]

    def _reload(self, served: str) -> bool:
        paths = [self.adapters[v] for v, s in self.served.items() if s == served]
        if not paths or self.adapter_loading != "api":
            return False
        with self._lock:
            self._load(served, paths[0])
        return True

    def _served_adapters(self) -> set[str]:
        """The LoRA adapters the server lists under /v1/models (the entries with a parent model)."""
        resp = self.client.get("/models")
        if resp.status_code >= 400:
            raise ServerError(f"{self.where}/models answered HTTP {resp.status_code}: {resp.text[:300]}",
                              status=resp.status_code)
        return {m["id"] for m in resp.json().get("data", []) if m.get("parent")}

    # --- generation ---------------------------------------------------------------
    def generate(self, conversations: Sequence[Conversation], params: SamplingParams, *,
                 adapter: str | None = None) -> list[list[str]]:
        if adapter is not None and adapter not in self.adapters:
            raise KeyError(f"adapter '{adapter}' is not loaded on {self.where}; call load_adapter first")
        model = self.served[adapter] if adapter is not None else self.model
        if model in self.owned:
            self.owned.move_to_end(model)  # most recently used
        if params.no_repeat_ngram_size and not self.no_repeat_warned:
            log.warning("no_repeat_ngram_size works in process only; %s generates without it", self.where)
            self.no_repeat_warned = True
        jobs = list(enumerate(conversations))
        with ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(jobs)))) as pool:
            outs = list(pool.map(lambda job: self._complete(job[1], params, model, job[0]), jobs))
        return outs

    def _complete(self, conversation: Conversation, params: SamplingParams, model: str, index: int) -> list[str]:
        """``params.n`` completions for one conversation, topping up when the server returns fewer."""
        texts: list[str] = []
        attempt = 0
        while len(texts) < params.n:
            want = params.n - len(texts)
            body = self._body(conversation, params, model, want,
                              None if params.seed is None else params.seed + 7919 * index + attempt)
            try:
                choices = self.chat_completions(body)
            except ServerError as exc:  # 404: another worker unloaded the adapter; load it again, once
                if exc.status != 404 or not self._reload(model):
                    raise
                choices = self.chat_completions(body)
            if not choices:
                raise ServerError(f"{self.where} returned no choices for model '{model}'")
            texts.extend((c.get("message") or {}).get("content") or "" for c in choices[:want])
            attempt += 1
        return [cut_at_stop(t, params.stop).strip() for t in texts]

    def _body(self, conversation: Conversation, params: SamplingParams, model: str, n: int,
              seed: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "messages": list(conversation), "max_tokens": params.max_new_tokens,
                                "temperature": params.temperature, "top_p": params.top_p, "n": n}
        if seed is not None:
            body["seed"] = seed
        if params.stop:
            body["stop"] = list(params.stop)
        if self.sampling_extensions is not False:
            body.update(extensions(params))
        if params.json_schema is not None and self.structured_output is not False:
            body["response_format"] = response_format(params.json_schema)
        body.update(self.extra_body)
        return body

    def chat_completions(self, body: dict[str, Any]) -> list[dict]:
        """One ``/chat/completions`` call with retries and the structured-output fallback; returns its choices.

        Public so other clients of the same server (the VLM video judge) share
        the retry, backoff and fallback behaviour instead of re-implementing it.
        """
        try:
            data = self._post("/chat/completions", body)
        except ServerError as exc:
            # 400 from OpenAI and vLLM, 422 from transformers serve: an unknown or unsupported field
            if exc.status not in (400, 422):
                raise
            extra = EXTENSION_FIELDS & body.keys()
            if extra:
                # The server does not take vLLM's sampling fields: remember, and ask again without them.
                log.warning("%s rejected %s; continuing without them", self.where, ", ".join(sorted(extra)))
                self.sampling_extensions = False
                return self.chat_completions({k: v for k, v in body.items() if k not in extra})
            if "response_format" in body:
                # The server does not do structured output: remember, and ask again without it.
                log.warning("%s rejected response_format; continuing without structured output",
                            self.where)
                self.structured_output = False
                return self.chat_completions({k: v for k, v in body.items() if k != "response_format"})
            raise
        if "response_format" in body:
            self.structured_output = True
        if EXTENSION_FIELDS & body.keys():
            self.sampling_extensions = True
        return data.get("choices") or []

    def _post(self, path: str, body: dict[str, Any], *, expect_json: bool = True) -> Any:
        """POST with retries: connection errors, timeouts and 408/429/5xx back off exponentially (with jitter)."""
        last: str = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1) * (1 + random.random() / 4))
            try:
                resp = self.client.post(path, json=body)
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            self.requests += 1
            if resp.status_code in RETRY_STATUS:
                last = f"HTTP {resp.status_code}: {resp.text[:300]}"
                continue
            if resp.status_code >= 400:
                raise ServerError(f"{self.where}{path} answered HTTP {resp.status_code}: {resp.text[:500]}",
                                  status=resp.status_code)
            if not expect_json:
                return resp.text
            try:
                return resp.json()
            except json.JSONDecodeError as exc:
                raise ServerError(f"{self.where}{path} answered non-JSON: {resp.text[:200]!r}") from exc
        raise ServerError(f"{self.where}{path} failed after {self.max_retries + 1} attempts: {last}")

    def close(self) -> None:
        self.client.close()
