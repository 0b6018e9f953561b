from runner.results import GENERATION_COLUMNS, shape_result

ENGINE_ROW = {
    "id": "news-001", "article": "text", "title": "t",
    "messages": [{"role": "user", "content": "x"}], "prompt": "templated", "sampling_params": {"max_tokens": 5},
    "generated_text": "A summary.", "generated_tokens": [1, 2, 3], "num_input_tokens": 42, "num_generated_tokens": 3,
    "time_taken_llm": 9.5,  # includes waiting for a free slot in the engine
    "metrics": {"arrival_time": 1000.0, "queued_ts": 50.0, "last_token_ts": 52.5, "first_token_latency": 0.25},
    "batch_uuid": "b",
}


def test_keeps_original_columns_and_generation_only():
    out = shape_result(ENGINE_ROW, ["id", "article", "title"])
    assert list(out) == ["id", "article", "title", *GENERATION_COLUMNS]
    assert out["id"] == "news-001" and out["generated_text"] == "A summary."
    assert out["num_input_tokens"] == 42 and out["num_generated_tokens"] == 3


def test_timing_comes_from_the_engine_clock_when_reported():
    out = shape_result(ENGINE_ROW, ["id"], now=5000.0)
    assert out["latency_s"] == 2.5 and out["ttft_s"] == 0.25
    assert out["finished_at"] == 1002.5


def test_timing_falls_back_to_ray_and_the_local_clock():
    row = {**ENGINE_ROW, "metrics": None}
    out = shape_result(row, ["id"], now=5000.0)
    assert out["latency_s"] == 9.5 and out["finished_at"] == 5000.0 and out["ttft_s"] is None


def test_a_failed_row_keeps_its_reason_and_no_generation():
    out = shape_result(ENGINE_ROW, ["id"], error="column 'article' is missing")
    assert out["error"] == "column 'article' is missing"
    assert out["generated_text"] == "" and out["num_generated_tokens"] == 0 and out["num_input_tokens"] == 0
    assert shape_result(ENGINE_ROW, ["id"])["error"] == ""
