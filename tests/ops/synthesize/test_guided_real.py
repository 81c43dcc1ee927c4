"""Knowledge-guided generation and Data Advisor end to end on the real SmolLM2: every question and
query is accounted for, and the answers are SmolLM2's own greedy answers (asked directly)."""

import pytest

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.models.base import Sampling
from dataflywheel.models.client import Model
from dataflywheel.ops.base import OpContext
from dataflywheel.ops.synthesize.data_advisor import DataAdvisor
from dataflywheel.ops.synthesize.knowledge_guided import KnowledgeGuided
from dataflywheel.recipe.models import ModelSpec


def ctx(smollm2):
    spec = ModelSpec(backend="hf", model="embedded:smollm2-135m-instruct", cache="off")
    return OpContext(models={"m": Model("m", spec, backend=smollm2)})


def seeds(texts):
    return io.rows_to_table(
        [{S.ID: f"s{i}", S.MESSAGES: [{"role": "user", "content": t}]} for i, t in enumerate(texts)]
    )


def answer(smollm2, question: str) -> str:
    (r,) = smollm2.chat([[{"role": "user", "content": question}]], Sampling(max_tokens=32))
    return r.text.strip()


@pytest.mark.slow
def test_knowledge_guided_on_smollm2_reviews_and_refines_every_answer(smollm2):
    from dataflywheel.ops import prompts
    from dataflywheel.ops.synthesize import knowledge_guided

    op = KnowledgeGuided(
        {"model": "m", "topics": 2, "tags": 2, "max_tokens": 32, "answer_max_tokens": 48, "seed": 1},
        ctx=ctx(smollm2),
    )
    rows = list(op.generate(seeds(["Astronomy"])))
    st = op.stats
    # the defining steps, for every branch: lists read, questions written, every answer reviewed in its
    # three parts and rewritten
    assert st["tree_topics"] == 2 and st["list_unread"] == 0
    assert st["question_missing"] == 0 and st["answer_missing"] == 0
    assert st["critique_unread"] == 0 and st["refined_answer_missing"] == 0
    assert len(rows) == st["questions"] == st["tree_tags"] >= 2
    refine = prompts.load(knowledge_guided.__file__, "condor_refine.txt")
    for r in rows:
        assert r["kg_domain"] == "Astronomy" and r["kg_tag"] and "\n" not in r[S.MESSAGES][0]["content"]
        assert r["kg_critique"].startswith("Strengths: ") and "\nImprovements: " in r["kg_critique"]
        question = r[S.MESSAGES][0]["content"]
        draft = answer48(smollm2, question)
        assert r["kg_draft"] == draft
        # the refined answer again, from a separate call with the same review
        ask = prompts.fill(refine, question=question, answer=draft, critique=r["kg_critique"])
        assert r[S.MESSAGES][1]["content"] == answer48(smollm2, ask)


def answer48(smollm2, question: str) -> str:
    (r,) = smollm2.chat([[{"role": "user", "content": question}]], Sampling(max_tokens=48))
    return r.text.strip()


@pytest.mark.slow
def test_data_advisor_on_smollm2_reads_every_issue_query_and_summary(smollm2):
    placeholders = [f"[placeholder request {i}]" for i in range(3)]
    op = DataAdvisor(
        {"model": "m", "rounds": 2, "per_round": 2, "max_tokens": 32, "issue_max_tokens": 24,
         "summary_max_tokens": 96, "response_max_tokens": 32, "seed": 2,
         "categories": ["medical", "financial"]},
        ctx=ctx(smollm2),
    )  # fmt: skip
    rows = list(op.generate(seeds(placeholders)))
    st = op.stats
    # the defining steps, every round: an issue named, queries written, the summary merged and read
    assert st["issue_unread"] == 0 and st["summary_unread"] == 0 and st["query_empty"] == 0
    assert st["unparsed"] == 0 and st["failed"] == 0
    assert len(rows) + st["response_missing"] == 2 * 2 and len(rows) >= 1
    assert st["exemplars_added"] == 2  # one new exemplar per round
    assert st["summary_lines"] >= 2
    issues = {r["advisor_round"]: r["advisor_issue"] for r in rows}
    for r in rows:
        assert r[S.PARENTS] and set(r[S.PARENTS]) <= {"s0", "s1", "s2"}
        assert "\n" not in r[S.MESSAGES][0]["content"] and "\n" not in r["advisor_issue"]
        assert r["advisor_issue"] == issues[r["advisor_round"]]
        assert r[S.MESSAGES][1]["content"] == answer(smollm2, r[S.MESSAGES][0]["content"])


@pytest.mark.slow
def test_blind_spots_on_smollm2_and_minilm_verify_new_questions_by_their_final_numbers(
    smollm2, minilm, shared_data
):
    import json

    from dataflywheel.lib.answers import final_answer
    from dataflywheel.ops.parsing import final_number_shape
    from dataflywheel.ops.synthesize.blind_spots import BlindSpots

    lines = (shared_data / "gsm8k" / "train.jsonl").read_text().splitlines()[:4]
    rows = [json.loads(x) for x in lines]
    table = io.rows_to_table(
        [
            {
                S.ID: f"g{i}",
                S.MESSAGES: [
                    {"role": "user", "content": r["question"]},
                    {"role": "assistant", "content": r["answer"]},
                ],
            }
            for i, r in enumerate(rows)
        ]
    )
    spec = ModelSpec(backend="hf", model="embedded:smollm2-135m-instruct", cache="off")
    context = OpContext(
        models={"m": Model("m", spec, backend=smollm2), "e": Model("e", spec, backend=minilm)}
    )
    # temperature 0.3: a 135M teacher sampled at 0.7 rarely agrees with its own greedy answer
    op = BlindSpots(
        {"model": "m", "student": "m", "embedder": "e", "clusters": 2, "per_cluster": 2, "max_tokens": 48,
         "student_max_tokens": 32, "seed": 3, "temperature": 0.3},
        ctx=context,
    )  # fmt: skip
    made = list(op.generate(table))
    st = op.stats
    # independent: the student's failures, recomputed by asking SmolLM2 directly
    wrong = sum(
        final_answer(answer(smollm2, r["question"]), "last_number")
        != final_answer(r["answer"], "last_number")
        for r in rows
    )
    assert st["student_failures"] == wrong >= 1 and st["clusters"] == min(2, wrong)
    asked = st["clusters"] * 2
    # every new question was written and both of its answers end on a number
    assert st["question_missing"] == 0 and st["answer_missing"] == 0 and st["unparsed"] == 0
    assert len(made) + st["unverified"] == asked and len(made) >= 1
    shaped = Sampling(max_tokens=48, constraint=final_number_shape(48))
    for r in made:
        assert set(r[S.PARENTS]) <= {"g0", "g1", "g2", "g3"} and r["blindspot_cluster_size"] >= 1
        question, solution = r[S.MESSAGES][0]["content"], r[S.MESSAGES][1]["content"]
        assert "\n" not in question and solution.rsplit("####", 1)[1].strip().lstrip("-").isdigit()
        (again,) = smollm2.chat([[{"role": "user", "content": question}]], shaped)
        assert again.text.strip() == solution  # the kept answer is the teacher's greedy answer


@pytest.mark.slow
def test_hybrid_generate_on_smollm2_every_strategy_makes_its_rows(smollm2):
    from dataflywheel.ops.synthesize.hybrid import HybridGenerate

    questions = ["What is 3 + 4?", "Name a primary color.", "How many legs does a spider have?"]
    cases = (
        ({"queries_per_seed": 1.0}, "answer_augmentation", 3),
        ({"queries_per_seed": 3.0}, "question_rephrase", 4),
        ({"queries_per_seed": 1.34, "strategy": "new_question"}, "new_question", 2),
    )
    for params, strategy, rows_made in cases:
        op = HybridGenerate({"model": "m", "max_tokens": 32, "seed": 4, **params}, ctx=ctx(smollm2))
        rows = list(op.generate(seeds(questions)))
        st = op.stats
        assert op.strategy == strategy and st["teacher_budget"] == int(params["queries_per_seed"] * 3)
        # the defining step: every teacher query gave its question and its answer
        assert st["question_missing"] == 0 and st["answer_missing"] == 0 and st["unparsed"] == 0
        assert len(rows) == rows_made and st["replies"] == st["teacher_queries"] <= st["teacher_budget"]
        for r in rows:
            assert r["hybrid_strategy"] == strategy and r[S.MESSAGES][1]["content"].strip()
            if strategy == "answer_augmentation":  # the seed's own question, a new answer
                assert r[S.MESSAGES][0]["content"] in questions
                assert r[S.PARENTS] == [f"s{questions.index(r[S.MESSAGES][0]['content'])}"]
            else:  # a new one-line question, derived from the seeds it names
                assert "\n" not in r[S.MESSAGES][0]["content"] and r[S.MESSAGES][0]["content"].strip()
                assert r[S.PARENTS] and set(r[S.PARENTS]) <= {"s0", "s1", "s2"}
                if strategy == "question_rephrase":
                    assert len(r[S.PARENTS]) == 1
