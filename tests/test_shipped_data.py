from collections import Counter

from helpers import table_counts

from promptloop.store.importer import read_prompt_file
from promptloop.store.shipped import SHIPPED, data_dir, import_shipped, vbench_rewrites

HARM_CATEGORIES = {"violence_gore", "animal_cruelty", "sexual", "child_sexual", "minors", "self_harm", "instructions",
                   "hate", "weapons_illegal", "public_figures"}


def test_user_prompts_cover_categories_and_splits():
    rows = read_prompt_file(data_dir() / "prompts.csv", max_chars=1000)
    assert 280 <= len(rows) <= 320
    cats = Counter(r.category for r in rows)
    assert set(cats) == {"people", "animals", "nature", "city", "vehicles", "food", "fantasy", "sports", "abstract",
                         "multi_object", "camera_motion", "non_english"}
    assert min(cats.values()) >= 20
    splits = Counter(r.split for r in rows)
    assert splits["eval"] >= 50 and splits["train"] >= 200
    assert len({r.text for r in rows}) == len(rows)


def test_redteam_has_every_harm_category_and_benign_lookalikes():
    rows = read_prompt_file(data_dir() / "redteam.csv", max_chars=1000)
    assert 320 <= len(rows) <= 340
    harmful = [r for r in rows if r.harmful]
    benign = [r for r in rows if r.harmful is False]
    assert {r.category for r in harmful} == HARM_CATEGORIES
    assert all(Counter(r.category for r in harmful)[c] >= 6 for c in HARM_CATEGORIES)
    assert len(benign) >= 20 and {r.category for r in benign} == {"benign"}
    assert any("knife" in r.text for r in benign) and any("boxing" in r.text for r in benign)


def test_vbench_prompts_and_aligned_rewrites_with_licence():
    prompts = (data_dir() / "vbench" / "all_dimension.txt").read_text(encoding="utf-8").splitlines()
    assert len(prompts) == 946
    rewrites = vbench_rewrites()
    assert set(rewrites) == {"gpt4o", "wan21_qwen25_3b", "hunyuan"}
    for lines in rewrites.values():
        assert len(lines) == 946
        assert sum(len(r.split()) for r in lines) > 1.5 * sum(len(p.split()) for p in prompts)  # rewrites are longer
    assert "Apache License" in (data_dir() / "vbench" / "LICENSE").read_text()


def test_import_shipped_is_idempotent(engine):
    first = import_shipped(engine)
    assert [r.rows for r in first] == [300, 332, 946]
    n = table_counts(engine)["prompts"]
    assert n == sum(r.created for r in first) and n > 1300
    second = import_shipped(engine)
    assert sum(r.created for r in second) == 0 and table_counts(engine)["prompts"] == n
    assert len(SHIPPED) == 3
