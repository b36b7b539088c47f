"""Teachers (#19): the VBench split, recorded-teacher import, teacher collections, teacher pairs, contamination."""

from __future__ import annotations

import json

import pytest
from helpers import run_cli as run
from helpers import table_snapshot
from sqlmodel import Session, select

from promptloop.config import Settings
from promptloop.errors import PromptloopError
from promptloop.evaluation.benches import load_bench
from promptloop.graphs.collect_pairs import select_pairs
from promptloop.graphs.loop import LoopConfig
from promptloop.store import repository as repo
from promptloop.store.engine import session_scope
from promptloop.store.hashing import prompt_hash
from promptloop.store.models import Candidate, Prompt, SFTExample
from promptloop.store.shipped import import_shipped, vbench_prompts, vbench_rewrites, vbench_split
from promptloop.store.teachers import import_teacher, shipped_teacher_rows, teacher_rewrites, teacher_sets


def test_vbench_split_is_deterministic_disjoint_and_the_default_bench(tmp_path):
    prompts = vbench_prompts()
    test = {p for p in prompts if vbench_split(p) == "test"}
    train = {p for p in prompts if vbench_split(p) == "train"}
    assert not test & train and test | train == set(prompts)
    assert 0.2 < len(test) / len(set(prompts)) < 0.3  # a quarter, by hash
    assert [vbench_split(p) for p in prompts] == [vbench_split(" ".join(p.split())) for p in prompts]
    s = Settings(home=tmp_path / "h")
    from promptloop.store.migrate import open_store

    s.ensure_home()
    engine = open_store(s.database_url)
    default, named, trainb = load_bench(engine, "vbench"), load_bench(engine, "vbench-test"), load_bench(engine, "vbench-train")
    assert default.prompts == named.prompts and set(default.prompts) == test and set(trainb.prompts) == train
    assert default.name == "vbench-test" and load_bench(engine, "vbench", 8).name == "vbench-test8"
    assert len(load_bench(engine, "vbench-all").prompts) == 946
    assert len(default.pool) == len(set(prompts))  # intent retrieval searches every VBench prompt
    # public rewrites stay aligned with their prompts
    every = vbench_prompts()
    gpt = vbench_rewrites()["gpt4o"]
    sub = load_bench(engine, "vbench", 5)
    assert sub.public["gpt4o"] == [gpt[every.index(p)] for p in sub.prompts]
    # the store: vbench-train prompts are training prompts, vbench-test ones held out
    import_shipped(engine)
    with Session(engine) as ss:
        rows = ss.exec(select(Prompt).where(Prompt.source == "vbench")).all()
    assert {r.split for r in rows if r.text in test} == {"test"} and {r.split for r in rows if r.text in train} == {"train"}
    # the shipped teacher only ever brings vbench-train prompts
    shipped = shipped_teacher_rows("gpt4o")
    assert {r.prompt for r in shipped} <= train and len(shipped) == sum(vbench_split(p) == "train" for p in prompts)


def test_stores_initialised_before_the_split_are_moved_onto_it(tmp_path):
    from promptloop.store.migrate import open_store

    s = Settings(home=tmp_path / "h")
    s.ensure_home()
    engine = open_store(s.database_url)
    with session_scope(engine) as ss:  # what `init` stored before: every VBench prompt in 'test'
        for p in vbench_prompts()[:40]:
            repo.add_prompt(ss, p, source="vbench", split="test")
        repo.add_prompt(ss, "a cat in a hat", source="mine", split="test")
    import_shipped(engine)
    with Session(engine) as ss:
        rows = ss.exec(select(Prompt).where(Prompt.source == "vbench")).all()
        mine = ss.exec(select(Prompt).where(Prompt.source == "mine")).one()
    assert all(r.split == vbench_split(r.text) for r in rows) and mine.split == "test"


@pytest.mark.slow  # 30-50 s of real CLI runs: in `make test-all` / CI, out of the 15-minute default run
def test_recorded_teacher_import_rejects_bad_rows_and_leaves_the_store_unchanged(tmp_path):
    home = tmp_path / "plhome"
    run(home, "init", "--no-models")
    from promptloop.store.migrate import open_store

    engine = open_store(f"sqlite:///{home / 'promptloop.db'}")
    with Session(engine) as s:
        held_out = s.exec(select(Prompt).where(Prompt.split == "eval")).first().text
    before = table_snapshot(engine)
    good = [{"prompt": "a kite over a beach", "rewrite": "A red kite dances over a windy beach at noon, wide shot."},
            {"prompt": "a cat at a window", "rewrite": "A grey cat watches rain from a window sill, soft light."}]
    bad_files = {
        "empty rewrite": good + [{"prompt": "a boat", "rewrite": "  "}],
        "no visible characters": good + [{"prompt": "\u0001\u0002", "rewrite": "a thing"}],
        "over the limit": good + [{"prompt": "a dog", "rewrite": "x" * 5000}],
        "held out in the store": good + [{"prompt": held_out, "rewrite": "A long detailed rewrite of it."}],
    }
    for why, rows in bad_files.items():
        f = tmp_path / "bad.jsonl"
        f.write_text("".join(json.dumps(r) + "\n" for r in rows))
        res = run(home, "teacher", "import", str(f), "--name", "big", check=False)
        assert res.returncode == 2, res.stderr
        assert why in res.stderr and "line 3" in res.stderr and "Traceback" not in res.stderr
        assert table_snapshot(engine) == before
    csv_bad = tmp_path / "bad.csv"
    csv_bad.write_text("prompt,answer\na,b\n")
    res = run(home, "teacher", "import", str(csv_bad), "--name", "big", check=False)
    assert res.returncode == 2 and "missing column" in res.stderr and table_snapshot(engine) == before
    res = run(home, "teacher", "import", str(csv_bad), "--name", "bad name!", check=False)
    assert res.returncode == 2 and table_snapshot(engine) == before
    res = run(home, "teacher", "import", check=False)
    assert res.returncode == 2 and "FILE or --shipped" in res.stderr

    f = tmp_path / "good.csv"
    f.write_text("prompt,rewrite\n" + "".join(f"{r['prompt']},{r['rewrite'].replace(',', ';')}\n" for r in good))
    out = run(home, "teacher", "import", str(f), "--name", "big").stderr
    assert "2 new rewrites" in out and "2 new prompts" in out
    assert "0 new rewrites" in run(home, "teacher", "import", str(f), "--name", "big").stderr  # idempotent
    listed = json.loads(run(home, "teacher", "list", "--json").stdout)
    assert listed == [{"name": "big", "rewrites": 2, "prompts": 2, "sources": [str(f)], "recorded": True}]
    rows = teacher_rewrites(engine, "big")
    assert [p.text for p, _ in rows] == [g["prompt"] for g in good] and all(p.split == "train" for p, _ in rows)
    with Session(engine) as s:
        cands = s.exec(select(Candidate).where(Candidate.origin == "teacher")).all()
    assert {(c.lineage["teacher"], c.lineage["line"], c.model_version_id) for c in cands} == {("big", 2, None),
                                                                                             ("big", 3, None)}
    with pytest.raises(PromptloopError, match="recorded teachers: big"):
        teacher_rewrites(engine, "nobody")


def test_teacher_pair_rule_takes_the_teachers_side_only_when_the_judge_agrees():
    def crit(degenerate=()):
        return {"harmless": 1.0, "accurate": 0.9, "helpful": 0.9, "checks": {"intent_similarity": 0.8},
                "degenerate": list(degenerate)}

    rewards = [{"total": 0.80, "dimensions": {}}, {"total": 0.95, "dimensions": {}},
               {"total": 0.60, "dimensions": {}}, {"total": 0.75, "dimensions": {}}]
    crits = [crit(), crit(), crit(), crit()]
    # candidate 1 is the best overall but the student's: the teacher rule never chooses it
    got = select_pairs(rewards, crits, rule="teacher", margin=0.1, teacher={0}, max_pairs=3)
    assert [(c.chosen, c.rejected) for c in got] == [(0, 2)]  # 0.80 - 0.75 < margin: no pair with 3
    # a degenerate teacher rewrite is never chosen, whatever the judge paid
    assert select_pairs(rewards, [crit(["repeats"]), *crits[1:]], rule="teacher", teacher={0}) == []
    # a degenerate student sample is rejected even inside the margin
    got = select_pairs(rewards, [crit(), crit(), crit(), crit(["cut off"])], rule="teacher", teacher={0}, max_pairs=3)
    assert [(c.chosen, c.rejected) for c in got][0] == (0, 3)
    assert select_pairs(rewards, crits, rule="teacher", teacher=set()) == []


def test_loop_schedule_teacher_steps():
    cfg = LoopConfig(schedule=["teacher-sft", "dpo", "teacher-dpo"], teacher="gpt4o")
    assert [cfg.step(r) for r in range(4)] == ["teacher-sft", "dpo", "teacher-dpo", "teacher-dpo"]
    assert [cfg.algorithm(r) for r in range(3)] == ["sft", "dpo", "dpo"]
    assert cfg.collection(0) == ("sft", {"max_refine_steps": None, "teacher": "gpt4o", "limit": None})
    assert "teacher" not in cfg.collection(1)[1] and cfg.collection(2)[1]["teacher"] == "gpt4o"
    with pytest.raises(PromptloopError, match="needs a teacher"):
        LoopConfig(schedule=["teacher-sft", "dpo"])
    with pytest.raises(PromptloopError, match="teacher-sft"):
        LoopConfig(schedule=["teacher-ppo"])


def test_sft_rows_are_kept_per_round(engine):
    """The same target reached in two rounds is a row in each (#17): idempotent within a round only."""
    with session_scope(engine) as s:
        p, _ = repo.add_prompt(s, "a fox in snow")
    r0, r1 = repo.ensure_round(engine, 0), repo.ensure_round(engine, 1)
    with session_scope(engine) as s:
        created = [repo.add_sft_example(s, p.id, "A red fox in snow.", round_id=r)[1] for r in (r0, r0, r1)]
    assert created == [True, False, True]


GOOD = [("a lighthouse in a storm", "A tall white lighthouse stands on black rocks as a violent storm crashes waves "
         "against it at night, its beam sweeping through heavy rain, lightning flashing behind dark clouds, wind "
         "whipping sea spray, dramatic wide shot, slow push in, cinematic lighting, realistic."),
        ("a cat playing piano", "A fluffy orange cat sits on a wooden bench and presses the keys of a black grand "
         "piano with its paws in a cosy living room, warm afternoon light through a window, close-up of paws on "
         "the keys, then a slow pan to the cat's curious face, soft focus background, film look.")]


def test_collect_sft_from_a_recorded_teacher(graph_runtime):
    """Teacher rows go through critic and guard; accepted ones become SFT rows with source teacher:NAME."""
    rt = graph_runtime
    good = [*GOOD, ("a horse running", "banana")]  # keeps nothing of the prompt: the critic rejects it
    from promptloop.store.teachers import TeacherRow

    import_teacher(rt.engine, [TeacherRow(i, p, r) for i, (p, r) in enumerate(good, 1)], name="tiny",
                   source="test")
    rep = rt.collect("sft", teacher="tiny", round_index=7, n=2)
    assert rep.prompts == 3 and rep.stored["accepted"] + rep.stored["rejected"] == 3
    with Session(rt.engine) as s:
        rows = s.exec(select(SFTExample).where(SFTExample.source == "teacher:tiny")).all()
        by_prompt = {s.get(Prompt, r.prompt_id).text: r for r in rows}
        cands = {r.candidate_id: s.get(Candidate, r.candidate_id) for r in rows if r.candidate_id}
        sampled = s.exec(select(Candidate).where(Candidate.prompt_id.in_([r.prompt_id for r in rows]),
                                                 Candidate.origin != "teacher")).all()
    assert by_prompt["a lighthouse in a storm"].status == "accepted"
    assert by_prompt["a lighthouse in a storm"].target == good[0][1]
    assert by_prompt["a horse running"].status == "rejected" and "accurate" in by_prompt["a horse running"].reason
    assert all(c.origin == "teacher" and c.lineage["teacher"] == "tiny" for c in cands.values())
    assert sampled == []  # the student wrote nothing, and a recorded row is not refined by default
    assert [t.name for t in teacher_sets(rt.engine)] == ["tiny"]
    with pytest.raises(PromptloopError, match="no teacher 'ghost'"):
        rt.collect("sft", teacher="ghost", round_index=7)


@pytest.mark.slow  # 30-50 s of real CLI runs: in `make test-all` / CI, out of the 15-minute default run
def test_eval_refuses_a_version_trained_on_the_benchs_prompts(tmp_path, smollm_path):
    home = tmp_path / "plhome"
    env = {"PROMPTLOOP_BASE_MODEL": str(smollm_path), "PROMPTLOOP_GENERATION__MAX_NEW_TOKENS": "16"}
    run(home, "init", "--no-models", env=env)
    from promptloop.store.migrate import open_store
    from promptloop.store.versions import ensure_base, register

    engine = open_store(f"sqlite:///{home / 'promptloop.db'}")
    bench = load_bench(engine, "vbench", 4)
    base = ensure_base(engine, str(smollm_path))
    with session_scope(engine) as s:
        leaked = s.exec(select(Prompt).where(Prompt.content_hash == prompt_hash(bench.prompts[1]))).one()
        clean = s.exec(select(Prompt).where(Prompt.split == "train")).first()
        ex = [repo.add_sft_example(s, pid, "A rewrite.", round_id=None)[0].id for pid in (leaked.id, clean.id)]
    register(engine, name="leaky-sft", base_model=str(smollm_path), adapter_path=None, parent_id=base.id,
             algorithm="sft", round_index=0, metrics={}, data_provenance={"example_ids": ex})
    register(engine, name="leaky-dpo", base_model=str(smollm_path), adapter_path=None, parent_id=None,
             algorithm="dpo", round_index=1, metrics={}, data_provenance={"pair_ids": []})
    from promptloop.store.versions import get_version

    with session_scope(engine) as s:  # the child inherits its parent's training data
        child = s.get(type(base), get_version(engine, "leaky-dpo").id)
        child.parent_id = get_version(engine, "leaky-sft").id
        s.add(child)
    before = table_snapshot(engine)
    for system in ("leaky-sft", "leaky-dpo"):
        res = run(home, "eval", "--bench", "vbench", "--limit", "4", "--redteam-limit", "0", "--system", system,
                  check=False, env=env)
        assert res.returncode == 2 and "trained on 1 of the 4 vbench-test4 prompts" in res.stderr
        assert "--allow-contaminated" in res.stderr and "Traceback" not in res.stderr
    assert table_snapshot(engine) == before
    res = run(home, "eval", "--bench", "vbench", "--limit", "4", "--redteam-limit", "0", "--system", "leaky-sft",
              "--system", "public:gpt4o", "--allow-contaminated", "--json", env=env)
    out = {r["system"]: r for r in json.loads(res.stdout)["results"]}
    assert out["leaky-sft"]["contaminated"] == 1 and out["public:gpt4o"]["contaminated"] == 0
    table = run(home, "eval", "--bench", "vbench", "--limit", "4", "--redteam-limit", "0", "--system", "leaky-sft",
                "--allow-contaminated", env=env).stdout
    assert "CONTAMINATED: leaky-sft trained on 1 of the 4 evaluated prompts" in table and "(cached)" in table
    # on prompts it never trained on the same version is clean (the check is per bench, by prompt hash)
    from promptloop.evaluation.runner import contamination
    from promptloop.services import Services

    deps = Services(Settings(home=home))
    leaky = get_version(engine, "leaky-dpo")
    assert contamination(deps, leaky, load_bench(engine, "eval")) == 0
    assert contamination(deps, leaky, load_bench(engine, "vbench")) == 1


def test_teacher_pairs_choose_the_teachers_rewrite_over_the_students_samples(graph_runtime):
    """collect pairs --teacher: the student samples n, the teacher's rewrite is the chosen side where the judge
    agrees, and every stored pair runs teacher -> student."""
    from promptloop.store.models import PreferencePair
    from promptloop.store.teachers import TeacherRow

    rt = graph_runtime
    import_teacher(rt.engine, [TeacherRow(i, p, r) for i, (p, r) in enumerate(GOOD, 1)], name="pairs-t",
                   source="test")
    rep = rt.collect("pairs", teacher="pairs-t", round_index=8, n=2, margin=0.0, max_refine_steps=0)
    assert rep.prompts == 2 and rep.stored["pairs"] >= 1
    with Session(rt.engine) as s:
        rr = s.exec(select(PreferencePair).where(PreferencePair.rule == "teacher")).all()
        sides = [(s.get(Candidate, p.chosen_id), s.get(Candidate, p.rejected_id)) for p in rr]
    assert len(rr) == rep.stored["pairs"]
    assert all(c.origin == "teacher" and c.lineage["teacher"] == "pairs-t" for c, _ in sides)
    assert all(r.origin == "sample" and r.model_version_id is not None for _, r in sides)
    # the judge agreed, or the student's sample was degenerate
    assert all(p.chosen_scores["total"] >= p.rejected_scores["total"] or p.rejected_scores["degenerate"] for p in rr)


@pytest.mark.slow
def test_loop_runs_a_teacher_sft_round_then_a_teacher_dpo_round(tmp_path, smollm_path):
    """`loop run --schedule teacher-sft,teacher-dpo --teacher NAME` on a recorded teacher, end to end."""
    home = tmp_path / "plhome"
    env = {"PROMPTLOOP_BASE_MODEL": str(smollm_path), "PROMPTLOOP_GENERATION__MAX_NEW_TOKENS": "24",
           "PROMPTLOOP_CRITIC__USE_LLM": "false"}
    run(home, "init", "--no-models", env=env)
    f = tmp_path / "t.jsonl"
    f.write_text("".join(json.dumps({"prompt": p, "rewrite": r}) + "\n" for p, r in GOOD))
    run(home, "teacher", "import", str(f), "--name", "rec", env=env)
    res = run(home, "loop", "run", "--schedule", "teacher-sft,teacher-dpo", "--teacher", "rec", "--rounds", "2",
              "--n", "2", "--margin", "0.0", "--max-steps", "1", "--eval-limit", "2", "--redteam-limit", "0",
              "--patience", "2", "--json", env=env)
    state = json.loads(res.stdout)["state"]
    r0, r1 = state["history"]
    assert [r0["algorithm"], r1["algorithm"]] == ["teacher-sft", "teacher-dpo"]
    assert r0["collected_by"] == r1["collected_by"] == "teacher:rec"
    assert r0["collected"]["prompts"] == 2 and r0["collected"]["accepted"] == 2
    assert r0["training"]["rows"] == 2 and r0["training"]["global_step"] == 1
    from promptloop.store.migrate import open_store
    from promptloop.store.models import ModelVersion, PreferencePair

    engine = open_store(f"sqlite:///{home / 'promptloop.db'}")
    with Session(engine) as s:
        rows = s.exec(select(SFTExample).where(SFTExample.status == "accepted")).all()
        pairs = s.exec(select(PreferencePair)).all()
        sft = s.exec(select(ModelVersion).where(ModelVersion.name == "main-r0-sft")).one()
    assert {r.source for r in rows} == {"teacher:rec"} and sorted(sft.data_provenance["example_ids"]) == sorted(
        r.id for r in rows)
    assert all(p.rule == "teacher" for p in pairs) and len(pairs) == r1["collected"]["pairs"]
