"""What the plain side sends: the dataset group's rows, read by the pipeline's own reader, made
into the prompts and sampling params the pipeline would make of them."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

from runner import prompt, readers
from runner.schema import RunConfig


def read_rows(config: RunConfig) -> List[Dict[str, Any]]:
    """Every row the run would read (within dataset.limit), with the ids the pipeline gives them."""
    reader = readers.for_dataset(config.dataset, text_columns=prompt.column_map(config.prompt).values())
    return reader.head(reader.scan().rows)


def chat_prompt(tokenizer, messages: List[Dict[str, str]]) -> str:
    """The prompt text Ray Data LLM's ChatTemplateStage makes from `messages`."""
    add_generation_prompt = messages[-1]["role"] == "user"
    return tokenizer.apply_chat_template(
        messages,
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
        continue_final_message=not add_generation_prompt,
    )


def build_requests(config: RunConfig, rows: Sequence[Mapping[str, Any]], model_source: str) -> List[Dict[str, Any]]:
    """Rows -> id, prompt text and sampling params of each request."""
    prompt_cfg = config.prompt
    columns = prompt.column_map(prompt_cfg)
    id_column = readers.id_column(config.dataset)
    tokenizer = None
    if prompt_cfg.chat_template:
        from transformers import AutoProcessor

        tokenizer = AutoProcessor.from_pretrained(model_source, trust_remote_code=config.model.trust_remote_code)
    requests = []
    for index, row in enumerate(rows):
        request = prompt.build_request(row, prompt_cfg, columns)
        text = chat_prompt(tokenizer, request["messages"]) if tokenizer is not None else request["prompt"]
        requests.append({"id": str(row.get(id_column, index)), "prompt": text, "sampling_params": request["sampling_params"]})
    return requests
