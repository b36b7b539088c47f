import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptloop.agents.llm.base import SamplingParams
from promptloop.agents.rewriter import Rewriter, clean_rewrite, rewrite_complete


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


@pytest.mark.parametrize("text,complete", [
    ("A dog runs on the beach.", False),  # the paragraph may go on
    ("A dog runs on the beach.\n", False),
    ("A dog runs on the beach.\n\n", True),
    ("A dog runs.\n \nNote: more", True),
    ("Here is the prompt:\n\n", False),  # meta-text and a blank line: the prompt itself has not started
    ("Sure! Here's the rewritten video prompt:\n\n\"A cat", False),
    ("\"\n\nA cat", False),  # a paragraph of quotes alone is no content
    ("**\n\nA fox leaps.\n\n", True),
])
def test_rewrite_complete_at_the_end_of_the_first_paragraph_with_content(text, complete):
    assert rewrite_complete(text) is complete


def test_quotes_are_stripped_from_the_first_paragraph_not_the_whole_text():
    assert clean_rewrite('"A dog runs."\n\nNote: "added light"') == "A dog runs."
    assert clean_rewrite('"\n\nA cat sleeps.') == "A cat sleeps."


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", " ", "\n", '"', "*", ":", ".", "Here is the prompt:", "Sure! ",
                                  "Prompt:", "Note"]), max_size=40).map("".join),
       st.lists(st.sampled_from(["c", " ", "\n", '"', "*", ":", "Here is", " the prompt:"]), max_size=12).map("".join))
def test_once_complete_no_continuation_changes_the_rewrite(text, more):
    """What lets a decoder stop at ``rewrite_complete``: the cleaned rewrite is then final."""
    if rewrite_complete(text):
        assert clean_rewrite(text + more) == clean_rewrite(text)


def test_the_in_process_backend_ends_a_row_where_until_says(chat_model):
    """A row ends at the first line break whose text ``until`` accepts; without ``until`` it runs on."""
    conv = [{"role": "user", "content": "Write three short numbered lines about a cat, one per line."}]
    params = SamplingParams(n=1, max_new_tokens=60, temperature=0.0)
    full = chat_model.generate([conv], params)[0][0]
    assert "\n" in full
    asked: list[str] = []

    def one_line(text: str) -> bool:
        asked.append(text)
        return text.rstrip(" ").endswith("\n")

    cut = chat_model.generate([conv], params.model_copy(update={"until": one_line}))[0][0]
    assert asked and all("\n" in a for a in asked)  # asked only once a line break was written
    assert cut == full.split("\n")[0].strip()  # the same greedy text, ended at its first line break
