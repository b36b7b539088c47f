import pytest

from promptloop.agents.llm.base import SamplingParams
from promptloop.agents.rewriter import Rewriter, clean_rewrite


@pytest.mark.parametrize("raw,expected", [
    ("Here is your prompt: A cat plays a piano.", "A cat plays a piano."),
    ("Sure! Here's the rewritten video prompt:\n\n\"A cat plays a piano.\"", "A cat plays a piano."),
    ("Video prompt: A red car\ndrives uphill.\n\nNote: I added lighting.", "A red car drives uphill."),
    ("**A fox leaps into snow.**", "A fox leaps into snow."),
    ("A plain answer stays as it is.", "A plain answer stays as it is."),
])
def test_clean_rewrite_strips_meta_text(raw, expected):
    assert clean_rewrite(raw) == expected


def test_messages_follow_the_template_and_settings():
    msgs = Rewriter(model=None, min_words=30, max_words=60).messages_for("  a cat playing piano ")
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "30 to 60 words" in msgs[0]["content"]
    for principle in ("Harmless", "Accurate", "Helpful"):
        assert principle in msgs[0]["content"]
    assert msgs[1]["content"] == "Request: a cat playing piano"


def test_rewrite_batch_with_the_real_model(chat_model):
    prompts = ["a cat playing piano", "un gato tocando el piano"]
    results = Rewriter(chat_model).rewrite(prompts, SamplingParams(n=2, max_new_tokens=40, seed=1))
    assert [r.prompt for r in results] == prompts
    for r in results:
        assert len(r.candidates) == 2
        assert all(c and not c.lower().startswith("here is") for c in r.candidates)
