"""Structured output without a model: the config checks, the engine parameter every row
carries, the parsing and validation of outputs, and the columns and types result rows get."""

import json

import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.parquet as pq
import pytest
from runner import outputs, pipeline, preflight, prompt, schema, structured
from runner.results import GENERATION_COLUMNS, shape_result
from runner.config import compose, to_object
from tests.configs import prompt as prompt_section, typed_config


def config(*overrides):
    return typed_config(*overrides)


def extract_spec():
    return structured.spec(config("prompt=extract").prompt)


GOOD = {"headline": "Lisbon taxes empty homes", "people": ["Ines Carvalhal"], "places": ["Lisbon"], "summary": "A levy passed."}


def test_the_shipped_options_give_the_engine_a_constraint_on_every_row_and_placeholder():
    for option, key in (("extract", "json"), ("classify", "choice")):
        prompt_cfg = config(f"prompt={option}").prompt
        request = prompt.build_request({"article": "Rain."}, prompt_cfg, prompt.column_map(prompt_cfg))
        constraint = request["sampling_params"]["structured_outputs"]
        assert list(constraint) == [key]
        # A row that cannot become a prompt still sends a request with the same keys and types.
        placeholder = pipeline._placeholder_request(prompt_cfg)["sampling_params"]
        assert placeholder["structured_outputs"] == constraint
        assert {k: type(v) for k, v in placeholder.items()} == {k: type(v) for k, v in request["sampling_params"].items()}
    schema_text = config("prompt=extract").prompt
    assert json.loads(structured.engine_param(schema_text)["json"])["additionalProperties"] is False
    assert "structured_outputs" not in prompt.sampling_params(config().prompt)  # free text: no constraint


def test_schema_fields_become_typed_columns():
    spec = extract_spec()
    assert spec.columns == {"headline": "string", "people": "list<string>", "places": "list<string>", "summary": "string"}
    odd = structured.spec(prompt_section(json_schema={"type": "object", "properties": {
        "n": {"type": "integer"}, "x": {"type": ["number", "null"]}, "ok": {"type": "boolean"},
        "tone": {"enum": ["calm", "angry"]}, "meta": {"type": "object"}, "pairs": {"type": "array", "items": {"type": "object"}},
    }}))
    assert odd.columns == {"n": "int64", "x": "float64", "ok": "bool", "tone": "string", "meta": "json", "pairs": "json"}
    values, error = structured.parse(odd, '{"n": 3.0, "x": 2, "meta": {"a": [1]}, "pairs": [{"b": 1}]}')
    assert error == ""
    assert values == {"n": 3, "x": 2.0, "ok": None, "tone": None, "meta": '{"a": [1]}', "pairs": '[{"b": 1}]'}
    assert isinstance(values["x"], float)


def test_a_valid_json_output_parses_into_its_fields():
    values, error = structured.parse(extract_spec(), json.dumps(GOOD))
    assert error == "" and values == GOOD


@pytest.mark.parametrize("output,tokens,needles", [
    # cut by max_tokens inside a string: the reason says so and names the fix
    ('{"headline": "Lisbon taxes empty homes", "people": ["Ines Carv', 320, ["not valid JSON", "prompt.max_tokens=320", "maxItems"]),
    ('{"headline": "x"', 12, ["not valid JSON"]),
    (json.dumps({**GOOD, "people": ["a", "b", "c", "d", "e"]}), 60, ["people", "too long"]),
    (json.dumps({**GOOD, "extra": 1}), 60, ["top level", "Additional properties"]),
    (json.dumps({k: v for k, v in GOOD.items() if k != "summary"}), 60, ["'summary' is a required property"]),
    (json.dumps({**GOOD, "headline": "x" * 101}), 60, ["headline", "too long"]),
])
def test_an_output_that_does_not_parse_or_validate_is_an_error_with_the_reason(output, tokens, needles):
    values, error = structured.parse(extract_spec(), output, num_generated_tokens=tokens, max_tokens=320)
    assert values == {"headline": None, "people": None, "places": None, "summary": None}
    for needle in needles:
        assert needle in error
    if tokens < 320:
        assert "max_tokens" not in error


def test_choices_parse_to_a_label_only_when_in_the_list():
    spec = structured.spec(config("prompt=classify").prompt)
    assert spec.columns == {"label": "string"}
    assert structured.parse(spec, "sport") == ({"label": "sport"}, "")
    assert structured.parse(spec, " health\n") == ({"label": "health"}, "")
    values, error = structured.parse(spec, "weather")
    assert values == {"label": None} and "'weather' is not one of prompt.choices" in error
    assert "max_tokens" in structured.parse(spec, "envir", num_generated_tokens=8, max_tokens=8)[1]


@pytest.mark.parametrize("overrides,needle", [
    (["prompt=classify", "prompt.json_schema={type: object, properties: {a: {type: string}}}"], "both set"),
    (["prompt=classify", "prompt.choices=[]"], "distinct, non-empty"),
    (["prompt=classify", "prompt.choices=[a,a]"], "distinct, non-empty"),
    (["prompt=extract", "prompt.json_schema.properties.headline.type=strin"], "not a valid JSON schema at properties/headline/type"),
    (["prompt=classify", "prompt.choices=null", "prompt.json_schema={type: array, items: {type: string}}"], "must describe an object with properties"),
    (["prompt=extract", "prompt.json_schema=/no/such/schema.json"], "cannot read it"),
    (["prompt=extract", "prompt.score_field=people"], "not a text field of prompt.json_schema. Fix: one of headline, summary"),
    (["prompt.score_field=summary"], "prompt.json_schema, which is not set"),
])
def test_bad_structured_settings_stop_before_the_run_naming_the_key(overrides, needle):
    with pytest.raises(preflight.PreflightError) as caught:
        schema.validate(compose(overrides))
    assert needle in str(caught.value)
    assert "prompt." in str(caught.value)


def test_a_schema_file_is_read_in_the_driver(tmp_path, monkeypatch):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"type": "object", "properties": {"topic": {"type": "string", "maxLength": 20}}, "required": ["topic"]}))
    monkeypatch.chdir(tmp_path)  # a path relative to where the runner starts
    cfg = compose(["prompt=extract", "prompt.json_schema=s.json", "prompt.score_field=topic"])
    schema.validate(cfg)
    prompt_cfg = structured.resolved(to_object(cfg).prompt)
    assert prompt_cfg.json_schema["properties"]["topic"]["maxLength"] == 20  # the workers get the mapping
    path.write_text("{not json")
    structured._schema_file.cache_clear()
    with pytest.raises(preflight.PreflightError, match="is not JSON"):
        schema.validate(cfg)


ENGINE_ROW = {"id": "n1", "article": "text", "highlights": "Lisbon taxes empty homes.", "generated_text": json.dumps(GOOD),
              "num_input_tokens": 40, "num_generated_tokens": 30, "time_taken_llm": 1.0, "metrics": None}


def shaped(row_outputs, row, error=""):
    out = shape_result(row, ["id", "article", "highlights"], now=1.0, error=error)
    row_outputs.apply(out, row)
    return out


def test_rows_keep_one_set_of_columns_whether_they_pass_or_fail():
    row_outputs = outputs.from_config(config("prompt=extract"))
    good = shaped(row_outputs, ENGINE_ROW)
    assert good["error"] == "" and good["people"] == ["Ines Carvalhal"] and good["generated_text"] == json.dumps(GOOD)
    # summary "A levy passed." against "Lisbon taxes empty homes.": nothing in common
    assert good["rouge1_f"] == 0.0
    cut = shaped(row_outputs, {**ENGINE_ROW, "generated_text": '{"headline": "Lis', "num_generated_tokens": 320})
    assert "not valid JSON" in cut["error"] and cut["generated_text"] == '{"headline": "Lis'  # what came back is kept
    assert cut["headline"] is None and cut["rouge1_f"] is None  # a failed row is not scored
    upstream = shaped(row_outputs, ENGINE_ROW, error="column 'article' is missing")
    assert upstream["error"] == "column 'article' is missing" and upstream["summary"] is None
    assert list(good) == list(cut) == list(upstream)
    assert list(good) == ["id", "article", "highlights", *GENERATION_COLUMNS, *row_outputs.columns()]


def test_free_text_is_scored_whole_and_labels_are_not_scored():
    summary = outputs.from_config(config())
    out = shaped(summary, {**ENGINE_ROW, "generated_text": "Lisbon taxes empty homes."})
    assert out["rouge1_f"] == 1.0 and out["rougeLsum_f"] == 1.0
    classify = outputs.from_config(config("prompt=classify"))
    assert not classify.scored and "rouge1_f" not in classify.columns()
    assert set(shaped(classify, {**ENGINE_ROW, "generated_text": "politics"})) >= {"label"}
    off = outputs.from_config(config("dataset.reference_column=null"))
    assert off.columns() == {}


def test_blocks_of_failed_rows_are_typed_so_all_files_read_together(tmp_path):
    row_outputs = outputs.from_config(config("prompt=extract"))
    good = shaped(row_outputs, ENGINE_ROW)
    bad = shaped(row_outputs, {**ENGINE_ROW, "generated_text": "{", "num_generated_tokens": 1})
    # A block whose rows all failed: Arrow sees only nulls and would type those columns `null`.
    all_failed = pa.Table.from_pylist([bad])
    assert all_failed.schema.field("people").type == pa.null()
    pq.write_table(row_outputs.typed(all_failed), tmp_path / "a.parquet")
    pq.write_table(row_outputs.typed(pa.Table.from_pylist([good])), tmp_path / "b.parquet")
    table = pds.dataset([str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")], format="parquet").to_table()
    assert table.schema.field("people").type == pa.list_(pa.string())
    assert table.schema.field("rouge1_f").type == pa.float64()
    assert table.column("people").to_pylist() == [None, ["Ines Carvalhal"]]


def test_clashes_with_the_data_are_named_with_the_fix():
    row_outputs = outputs.from_config(config("prompt=extract"))
    assert row_outputs.column_problems(["id", "article", "highlights"], "sample_news") == []
    problems = row_outputs.column_problems(["id", "article", "headline"], "jsonl")
    assert len(problems) == 2
    assert "dataset.reference_column='highlights' is not a column of dataset=jsonl" in problems[0]
    assert "dataset.reference_column=null" in problems[0]
    assert "result column 'headline'" in problems[1] and "rename the field" in problems[1]
    classify = outputs.from_config(config("prompt=classify", "dataset.reference_column=null"))
    assert "prompt.choices writes result column 'label'" in classify.column_problems(["id", "article", "label"], "jsonl")[0]


def test_a_bad_output_stops_a_fail_fast_run_and_is_kept_otherwise():
    row_outputs = outputs.from_config(config("prompt=extract"))
    bad = {**ENGINE_ROW, "generated_text": '{"headline": ', "num_generated_tokens": 5}
    kept = pipeline._postprocess(bad, ["id", "article", "highlights"], row_outputs, "id", fail_fast=False)
    assert "not valid JSON" in kept["error"] and kept["headline"] is None
    with pytest.raises(ValueError, match=r"row id='n1': output is not valid JSON.*errors.on_row_error=continue"):
        pipeline._postprocess(bad, ["id", "article", "highlights"], row_outputs, "id", fail_fast=True)
    # A row that failed before the engine already stopped a fail-fast run in the preprocess.
    upstream = {**bad, pipeline.ROW_ERROR: "column 'article' is missing"}
    assert pipeline._postprocess(upstream, ["id"], row_outputs, "id", fail_fast=True)["error"] == "column 'article' is missing"
