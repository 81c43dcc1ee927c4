# ruff: noqa: E501  (the chat templates are quoted as published)
import itertools

import jinja2
import pytest

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.lib.tokens import load_tokenizer
from dataflywheel.models.template import pre_query
from dataflywheel.ops.synthesize.magpie import Magpie
from dataflywheel.ops.synthesize.magpie_tag import MagpieTag, read_label
from tests.fakes import ScriptedBackend, context

# Meta-Llama-3-8B-Instruct's chat template.
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
# Qwen2.5-Instruct's chat template, the branch taken without tools.
QWEN25 = """{%- if messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
{%- else %}
    {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant") %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""


class JinjaTokenizer:
    """Renders a chat template string as transformers does (trim_blocks, lstrip_blocks)."""

    def __init__(self, template: str, bos_token: str = ""):
        env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
        self.template, self.bos = env.from_string(template), bos_token

    def apply_chat_template(self, conv, add_generation_prompt=False, tokenize=False, **_):
        return self.template.render(
            messages=conv, add_generation_prompt=add_generation_prompt, bos_token=self.bos
        )


def test_pre_query_of_smollm2_includes_its_default_system_turn():
    tok = load_tokenizer("embedded:smollm2-135m-instruct")
    pq = pre_query(tok)
    assert pq == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\n"
    )
    # independent check: a real conversation renders as the pre-query followed by the user's words
    rendered = tok.apply_chat_template([{"role": "user", "content": "Hi there"}], tokenize=False)
    assert rendered.startswith(pq + "Hi there")
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert pre_query(tok, history).endswith("<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n")


def test_pre_query_of_llama3_and_qwen25_templates():
    llama = JinjaTokenizer(LLAMA3, bos_token="<|begin_of_text|>")
    assert pre_query(llama) == "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
    assert pre_query(llama, [{"role": "system", "content": "Solve math."}]) == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nSolve math.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n"
    )
    qwen = JinjaTokenizer(QWEN25)
    assert pre_query(qwen) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n"
    )
    # the same through a real tokenizer given the template string
    tok = load_tokenizer("embedded:smollm2-135m-instruct")
    assert pre_query(tok, chat_template=QWEN25) == pre_query(qwen)


def seeds(n):
    return io.rows_to_table(
        [{S.ID: f"s{i}", S.MESSAGES: [{"role": "user", "content": "x"}]} for i in range(n)]
    )


def magpie_backend(instructions, **kw):
    it = iter(instructions)
    return ScriptedBackend(
        [("<|im_start|>user\n", lambda conv: next(it))],
        default=lambda conv: f"Answer to: {conv[-1]['content']}",
        **kw,
    )


def test_magpie_samples_n_instructions_from_one_pre_query_and_answers_each():
    b = magpie_backend(["Name three rivers.", "  ", "Explain tides."])
    op = Magpie({"model": "m", "pre_query": "<|im_start|>user\n"}, ctx=context(m=b))
    rows = list(op.generate(seeds(3)))
    text_calls = [c for c in b.calls if c[0]["role"] == "text"]
    assert len(text_calls) == 1 and text_calls[0][0]["content"] == "<|im_start|>user\n"  # one request, n = 3
    assert [r[S.MESSAGES] for r in rows] == [
        [
            {"role": "user", "content": "Name three rivers."},
            {"role": "assistant", "content": "Answer to: Name three rivers."},
        ],
        [
            {"role": "user", "content": "Explain tides."},
            {"role": "assistant", "content": "Answer to: Explain tides."},
        ],
    ]
    assert [r[S.PARENTS] for r in rows] == [["s0"], ["s2"]]
    assert op.stats["instruction_empty"] == 1 and op.stats["unparsed"] == 1


def test_magpie_multi_turn_continues_from_the_conversation_so_far():
    tok = load_tokenizer("embedded:smollm2-135m-instruct")
    counter = itertools.count()
    b = ScriptedBackend(
        [("<|im_start|>user\n", lambda conv: f"Question {next(counter)}?")],
        default=lambda conv: f"Reply to {conv[-1]['content']}",
    )
    op = Magpie(
        {"model": "m", "tokenizer": "embedded:smollm2-135m-instruct", "turns": 2, "per_seed": 2},
        ctx=context(m=b),
    )
    rows = list(op.generate(seeds(1)))
    assert [[m["content"] for m in r[S.MESSAGES]] for r in rows] == [
        ["Question 0?", "Reply to Question 0?", "Question 2?", "Reply to Question 2?"],
        ["Question 1?", "Reply to Question 1?", "Question 3?", "Reply to Question 3?"],
    ]
    second = [c[0]["content"] for c in b.calls if c[0]["role"] == "text"][1]
    history = [
        {"role": "user", "content": "Question 0?"},
        {"role": "assistant", "content": "Reply to Question 0?"},
    ]
    assert second == pre_query(tok, history)


def test_magpie_drops_truncated_instructions_and_failed_turns():
    b = magpie_backend(["A long instruction that was cut"] * 2, finish="length")
    op = Magpie({"model": "m", "pre_query": "<|im_start|>user\n"}, ctx=context(m=b))
    assert list(op.generate(seeds(2))) == [] and op.stats["instruction_truncated"] == 2
    b = ScriptedBackend([("<|im_start|>user\n", "Fine question?")], default=None)  # every answer fails
    op = Magpie({"model": "m", "pre_query": "<|im_start|>user\n"}, ctx=context(m=b))
    assert list(op.generate(seeds(2))) == [] and op.stats["response_missing"] == 2 and op.stats["failed"] == 2


def test_magpie_without_a_tokenizer_says_what_to_give():
    class NoTokenizer(ScriptedBackend):
        pass

    op = Magpie({"model": "m"}, ctx=context(m=NoTokenizer()))
    with pytest.raises(ValueError, match="give `tokenizer`"):
        list(op.generate(seeds(1)))


def test_read_label_accepts_only_the_tags_labels():
    assert read_label('{"explanation": "clear", "input_quality": "Good"}', "input_quality") == "good"
    assert read_label('Sure! {"intent": "x", "difficulty": "very hard"} done', "difficulty") == "very hard"
    assert read_label('"primary_tag": "Math", and more', "task_category") == "Math"
    assert read_label('{"input_quality": "superb"}', "input_quality") is None
    assert read_label("It is good.", "input_quality") is None


def test_magpie_tag_scores_ordinal_tags_and_records_unparsed():
    b = ScriptedBackend(
        [
            ("Sort these numbers", '{"explanation": "ok", "input_quality": "excellent"}'),
            ("Do it", "I think it is fine."),
        ]
    )
    op = MagpieTag({"model": "m"}, ctx=context(m=b))
    table = io.rows_to_table(
        [
            {S.ID: "a", S.MESSAGES: [{"role": "user", "content": "Sort these numbers: 3 1 2"}]},
            {S.ID: "b", S.MESSAGES: [{"role": "user", "content": "Do it"}]},
        ]
    )
    out = op.score(table)
    assert out["tag_input_quality"].to_pylist() == ["excellent", None]
    assert out["score_input_quality"].to_pylist() == [5.0, None]
    assert out["error_input_quality"].to_pylist()[1].startswith("unparsed reply")
    assert op.stats["unparsed"] == 1
