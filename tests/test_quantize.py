"""The weight-only int8 decoding path: the layer, the per-version merged copies, and the chat model on them."""

from pathlib import Path

import pytest
import torch

from promptloop.agents.llm.base import SamplingParams
from promptloop.agents.llm.quantize import Int8Linear, int8_copy, int8_supported, resolve

pytestmark = pytest.mark.skipif(not int8_supported(), reason="this torch build lacks _weight_int8pack_mm")


def test_int8_linear_is_close_to_the_fp32_layer():
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 40)
    x = torch.randn(3, 5, 96)
    want = linear(x)
    got = Int8Linear(linear)(x)
    assert got.shape == want.shape and got.dtype == torch.float32
    rel = (got - want).norm() / want.norm()
    assert rel < 0.01, float(rel)
    q = Int8Linear(linear)
    assert q.weight_int8.dtype == torch.int8 and q.scale.shape == (40,)
    assert int(q.weight_int8.abs().max()) == 127  # every row's largest weight maps to the full range


def test_resolve_rules():
    assert resolve("none", "cpu", torch.float32) == "none"
    assert resolve("auto", "cuda", torch.bfloat16) == "none"
    assert resolve("auto", "cpu", torch.bfloat16) == "none"
    assert resolve("int8", "cpu", torch.float32) == "int8"
    with pytest.raises(ValueError, match="quantize=int8 needs fp32 decoding on a CPU"):
        resolve("int8", "cuda", torch.float32)
    with pytest.raises(ValueError, match="dtype bfloat16"):
        resolve("int8", "cpu", torch.bfloat16)


def tiny_lm():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def test_int8_copy_merges_only_the_asked_adapter_and_leaves_the_model_alone():
    from peft import LoraConfig, PeftModel, get_peft_model

    lora = dict(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    model = get_peft_model(tiny_lm(), LoraConfig(**lora), adapter_name="va")
    model.add_adapter("vb", LoraConfig(**lora))
    ids = torch.randint(0, 128, (2, 12))
    with torch.no_grad():
        model.set_adapter("va")
        want_a = model(input_ids=ids).logits
        model.set_adapter("vb")
        want_b = model(input_ids=ids).logits
        with model.disable_adapter():
            want_base = model(input_ids=ids).logits
        copies = {name: int8_copy(model, name) for name in ("va", "vb", None)}
        got = {name: m(input_ids=ids).logits for name, m in copies.items()}

    def rel(x: torch.Tensor, y: torch.Tensor) -> float:
        return float((x - y).norm() / y.norm())

    assert rel(got["va"], want_a) < 0.02 and rel(got["vb"], want_b) < 0.02 and rel(got[None], want_base) < 0.02
    assert rel(got["va"], want_b) > 5 * rel(got["va"], want_a)  # the adapters differ, and the right one was merged
    for m in copies.values():
        assert not isinstance(m, PeftModel)
        # the input embeddings are shared with the source, not copied (the source's logits below are unchanged)
        assert m.get_input_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
        assert not [n for n, mod in m.named_modules() if isinstance(mod, torch.nn.Linear)]
    # the source keeps both adapters, its active one and its fp32 layers
    assert set(model.peft_config) == {"va", "vb"} and model.active_adapter == "vb"
    assert isinstance(model.base_model.model.model.layers[0].self_attn.q_proj.base_layer, torch.nn.Linear)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, want_b)


def test_chat_model_decodes_int8_close_to_fp32_and_keeps_one_copy_per_version(chat_model, tmp_path: Path):
    """The in-process backend on int8: token log-probs of fp32's own greedy text agree with fp32's, versions
    get their own merged copies, and the fp32 model (what training and scoring use) is untouched."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from promptloop.agents.llm.transformers_backend import INT8_COPIES, TransformersChatModel

    conv = [{"role": "user", "content": "Describe a red car on a mountain road in one sentence."}]
    params = SamplingParams(n=1, max_new_tokens=24, temperature=0.0)
    reference = chat_model.generate([conv], params)[0][0]
    q = TransformersChatModel(chat_model.path, device="cpu", quantize="int8")
    assert q.quantize == "int8"
    ids = q.tokenizer(q.render(conv) + reference, add_special_tokens=False, return_tensors="pt")["input_ids"]
    start = len(q.tokenizer(q.render(conv), add_special_tokens=False)["input_ids"])
    text = q.generate([conv], params)[0][0]
    assert text.strip()
    with torch.no_grad(), q._decoding(None) as int8_model:
        p = torch.log_softmax(q.model(input_ids=ids).logits[0, start - 1:-1], -1)
        r = torch.log_softmax(int8_model(input_ids=ids).logits[0, start - 1:-1], -1)
    kl = float((p.exp() * (p - r)).sum(-1).mean())
    assert kl < 0.03, kl
    assert float((p.argmax(-1) == r.argmax(-1)).float().mean()) >= 0.85

    base = AutoModelForCausalLM.from_pretrained(chat_model.path)
    get_peft_model(base, LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"],
                                    init_lora_weights=False)).save_pretrained(tmp_path / "adapter")
    q.load_adapter("v1", tmp_path / "adapter")
    with_adapter = q.generate([conv], params, adapter="v1")[0][0]
    assert with_adapter != text
    assert q.generate([conv], params)[0][0] == text  # the base copy is reused, same text
    assert list(q._int8) == ["v1", None]  # most recently used last
    assert sum(isinstance(m, torch.nn.Linear) for m in q.model.modules()) > 0  # fp32 model kept for training
    for i in range(INT8_COPIES + 1):  # more versions than copies kept: the least recently used copies go
        q.load_adapter(f"x{i}", tmp_path / "adapter")
        q.generate([conv], SamplingParams(n=1, max_new_tokens=1, temperature=0.0), adapter=f"x{i}")
    assert len(q._int8) == INT8_COPIES and None not in q._int8 and f"x{INT8_COPIES}" in q._int8


def test_the_setting_reaches_the_in_process_backend(graph_runtime, smollm_path: Path):
    """``quantize`` is read once, from Settings: auto resolves by the machine, none keeps fp32 decoding."""
    from promptloop.agents.llm.factory import build_chat_model
    from promptloop.config import BackendSettings

    assert graph_runtime.settings.quantize == "auto"
    assert graph_runtime.chat_model.quantize == resolve("auto", "cpu", torch.float32)
    fp32 = build_chat_model(BackendSettings(model=str(smollm_path)),
                            graph_runtime.settings.model_copy(update={"quantize": "none"}))
    assert fp32.quantize == "none"
    fp32.generate([[{"role": "user", "content": "a cat"}]], SamplingParams(n=1, max_new_tokens=2, temperature=0.0))
    assert fp32._int8 == {}


def test_fused_step_matches_the_int8_copys_transformers_forward():
    """The fused decode step is the copy's own arithmetic: next-token logits equal its transformers forward's
    bit for bit, padded rows included, and the fused q/k/v and gate/up buffers are the copy's weights, not new
    bytes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from promptloop.agents.llm.decode_step import LlamaInt8Step, decode_step, supports
    from promptloop.agents.llm.kv_cache import reserved_cache

    torch.manual_seed(0)  # SmolLM2-135M's attention shape (9 heads on 3 kv heads of 64), two layers
    source = LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=576, intermediate_size=1536,
                                          num_hidden_layers=2, num_attention_heads=9, num_key_value_heads=3,
                                          tie_word_embeddings=True)).eval()
    assert not supports(source)  # fp32 linears: the transformers forward stays
    model = int8_copy(source)
    attn = model.model.layers[0].self_attn
    x = torch.randn(3, 576)
    before = attn.k_proj(x)
    assert supports(model)
    step = decode_step(model, "cache")
    assert isinstance(step, LlamaInt8Step) and decode_step(model, "cache") is step  # built once
    qkv_weight = step.layers[0][2][0]
    assert attn.q_proj.weight_int8.data_ptr() == qkv_weight.data_ptr()
    assert attn.k_proj.weight_int8.data_ptr() == qkv_weight[attn.q_proj.weight_int8.shape[0]:].data_ptr()
    assert torch.equal(attn.k_proj(x), before)
    assert not isinstance(decode_step(model, "cache", fused=False), LlamaInt8Step)

    torch.manual_seed(1)
    prompt = torch.randint(1, 128, (3, 207))
    tokens = torch.randint(1, 128, (3,))
    padded = torch.ones(3, 208, dtype=torch.long)
    padded[1, :7] = 0  # a left-padded row: the step gets a mask
    for mask in (padded, torch.ones(3, 208, dtype=torch.long)):  # and without padding, no mask
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = {}
        with torch.inference_mode():
            for fused in (True, False):
                cache = reserved_cache(model.config, 216)
                model(input_ids=prompt, attention_mask=mask[:, :207], position_ids=positions[:, :207],
                      cache=cache, use_cache=True)
                one = decode_step(model, "cache", fused=fused)
                first = one(tokens, mask, positions[:, 207], cache)
                # and a second step on the cache the first one wrote
                logits[fused] = first, one(first.argmax(-1), torch.cat([mask, mask[:, :1]], 1),
                                           positions[:, 207] + 1, cache)
        for got, want in zip(logits[True], logits[False], strict=True):
            assert got.shape == (3, 128) and got.dtype == torch.float32
            assert torch.equal(got, want), (got - want).abs().max()


def test_fused_step_leaves_sampled_text_unchanged_on_the_real_model(chat_model):
    """On SmolLM2's int8 copy the fused step samples the same text as the transformers forward, for one prompt
    x 4 samples (no mask) and two prompts of different lengths (a padded row)."""
    from promptloop.agents.llm.transformers_backend import TransformersChatModel

    q = TransformersChatModel(chat_model.path, device="cpu", quantize="int8")
    convs = [[{"role": "user", "content": "Rewrite as a video prompt: a red car on a mountain road"}],
             [{"role": "user", "content": "Rewrite as a video prompt: fog"}]]
    params = SamplingParams(n=4, max_new_tokens=40, temperature=0.8, top_p=0.95, seed=3)
    for batch in (convs[:1], convs):
        q.generate(batch, params.model_copy(update={"max_new_tokens": 1}))  # both runs below reuse its prefix
        texts = {}
        for fused in (True, False):
            q.fused_step = fused
            texts[fused] = q.generate(batch, params)
        assert texts[True] == texts[False]
        assert len({t for row in texts[True] for t in row}) > 1  # sampled: the rows differ from each other
