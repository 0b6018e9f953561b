import pytest

from runner import prompt
from tests.configs import prompt as prompt_section, typed_config


def summarize_cfg(**overrides):
    return typed_config(*[f"prompt.{k}={v}" for k, v in overrides.items()]).prompt


def test_summarize_builds_system_and_user_messages():
    cfg = summarize_cfg()
    row = {"id": "a", "article": "The council voted 7-2 to build a bridge."}
    request = prompt.build_request(row, cfg, prompt.column_map(cfg))
    assert request["messages"] == [
        {"role": "system", "content": "You are a commentator. Your task is to summarize highlights from article."},
        {
            "role": "user",
            "content": "# Article:\nThe council voted 7-2 to build a bridge.\n\n#Instructions:\n"
            "In clear and concise language, summarize the highlights presented in the article.",
        },
    ]
    assert request["sampling_params"] == {"temperature": 0.3, "top_p": 1.0, "max_tokens": 150, "ignore_eos": False}
    assert "prompt" not in request


def test_the_column_read_is_configurable():
    cfg = summarize_cfg(**{"columns.article": "text"})
    assert prompt.column_map(cfg) == {"article": "text"}
    request = prompt.build_request({"text": "Rain in Lisbon."}, cfg, prompt.column_map(cfg))
    assert "Rain in Lisbon." in request["messages"][1]["content"]


def test_raw_prompts_skip_the_chat_template():
    cfg = prompt_section(user="Q: {question}", columns={}, system=None, chat_template=False,
                         temperature=0.0, top_p=1.0, max_tokens=5, ignore_eos=True)
    request = prompt.build_request({"question": "2+2?"}, cfg, prompt.column_map(cfg))
    assert request == {"prompt": "Q: 2+2?", "sampling_params": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 5, "ignore_eos": True}}


def test_placeholders_in_order_without_repeats():
    assert prompt.placeholders("{a} and {b} then {a} {{literal}}") == ["a", "b"]


def test_placeholder_with_attribute_access_is_refused():
    with pytest.raises(ValueError, match="prompt.user"):
        prompt.placeholders("{row.article}")


@pytest.mark.parametrize("row,needle", [({"id": 1}, "missing"), ({"article": None}, "NoneType"), ({"article": 3}, "int")])
def test_bad_rows_name_the_column(row, needle):
    cfg = summarize_cfg()
    with pytest.raises(prompt.PromptInputError) as caught:
        prompt.build_request(row, cfg, prompt.column_map(cfg))
    assert "article" in str(caught.value) and needle in str(caught.value)


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_an_empty_text_field_is_a_failed_row_not_a_prompt(text):
    cfg = summarize_cfg()
    with pytest.raises(prompt.PromptInputError, match=r"column 'article' \(prompt placeholder \{article\}\) is empty"):
        prompt.build_request({"id": "e", "article": text}, cfg, prompt.column_map(cfg))
