"""Every option of every group, and every experiment, composes; typos and wrong types fail at compose time."""

import dataclasses
import re
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from runner import schema
from runner.config import CONF_DIR, compose

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "experiment")
# Groups whose options carry their own name (the schema has a `name` field for them).
NAMED_GROUPS = sorted(
    f.name for f in dataclasses.fields(schema.RunConfig)
    if dataclasses.is_dataclass(f.default_factory) and "name" in {g.name for g in dataclasses.fields(f.default_factory)}
)
EXPERIMENTS = sorted(path.stem for path in (CONF_DIR / "experiment").glob("*.yaml"))
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF_DIR / group).glob("*.yaml"))]
REQUIRED_OPTIONS = {
    "model": {"smollm2_135m", "llama31_8b"},
    "dataset": {"sample_news", "cnn_dailymail", "jsonl", "parquet"},
    "prompt": {"summarize"},
    "hw": {"cpu", "l4"},
    "engine": {"default"},
}
# Options that need a value no default can give.
NEEDS = {
    ("dataset", "jsonl"): ["dataset.path=/data/x.jsonl"],
    ("dataset", "parquet"): ["dataset.path=/data/x.parquet"],
    ("dataset", "csv"): ["dataset.path=/data/x.csv"],
}


def test_the_required_options_exist():
    have = {}
    for group, option in OPTIONS:
        have.setdefault(group, set()).add(option)
    for group, options in REQUIRED_OPTIONS.items():
        assert options <= have.get(group, set()), f"{group} lacks {options - have.get(group, set())}"


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_resolves(group, option):
    cfg = compose([f"{group}={option}", *NEEDS.get((group, option), [])])
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    if group in NAMED_GROUPS:
        # MLflow tags and run names come from it: a copied option that kept its source's
        # name would log its runs under the wrong one.
        assert resolved[group]["name"] == option
    schema.validate(cfg)


def test_the_named_groups_are_the_ones_runs_are_named_by():
    assert set(NAMED_GROUPS) == {"model", "dataset", "prompt", "hw"}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_with_each_swept_value(experiment):
    """As lightning-hydra-template composes `experiment=glob(*)`: an overlay is composed only
    when someone runs it, so a key it or its sweep misspells would otherwise surface then."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = compose([f"+experiment={experiment}"])
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    schema.validate(cfg)
    swept = compose([f"+experiment={experiment}"], return_hydra_config=True).hydra.sweeper.get("params") or {}
    if not swept:
        return
    parser = OverridesParser.create()
    parsed = parser.parse_overrides([f"{key}={value}" for key, value in swept.items()])
    for override in parsed:
        for value in override.sweep_string_iterator():
            one = compose([f"+experiment={experiment}", f"{override.get_key_element()}={value}"])
            OmegaConf.to_container(one, resolve=True, throw_on_missing=True)
            schema.validate(one)


def test_default_is_the_embedded_job():
    cfg = compose()
    assert cfg.model.name == "smollm2_135m" and cfg.model.source == "embedded"
    assert cfg.dataset.name == "sample_news" and cfg.hw.name == "cpu"
    assert cfg.prompt.temperature == 0.3 and cfg.prompt.max_tokens == 150
    assert cfg.prompt.system == "You are a commentator. Your task is to summarize highlights from article."
    assert cfg.prompt.user.startswith("# Article:\n{article}\n\n#Instructions:\n")


def test_l4_profile_sets_processor_and_engine():
    cfg = compose(["model=llama31_8b", "hw=l4"])
    assert cfg.hw.accelerator_type == "L4" and cfg.hw.gpus_per_replica == 1
    assert cfg.processor.batch_size == 16 and cfg.processor.concurrency == 1
    assert cfg.engine.max_model_len == 16384 and cfg.engine.enable_chunked_prefill is True
    assert cfg.engine.max_num_batched_tokens == 2048
    assert cfg.engine.tensor_parallel_size == 1 and cfg.engine.pipeline_parallel_size == 1
    assert cfg.model.path == "unsloth/Llama-3.1-8B-Instruct"


def test_command_line_beats_the_hw_profile():
    cfg = compose(["hw=l4", "engine.max_num_batched_tokens=4096"])
    assert cfg.engine.max_num_batched_tokens == 4096


@pytest.mark.parametrize(
    "override,key",
    [
        ("+engine.max_num_seq=8", "max_num_seq"),  # typo of max_num_seqs
        ("+model.weight=dummy", "weight"),
        ("+hw.gpus=2", "gpus"),
    ],
)
def test_unknown_key_fails_naming_it(override, key):
    # Without `+` Hydra refuses the key itself; with `+` it adds it, and the schema check
    # that runs before anything else refuses it.
    with pytest.raises(ConfigCompositionException) as caught:
        compose([override.lstrip("+")])
    assert key in str(caught.value.__cause__ or caught.value)
    with pytest.raises(schema.UnknownKeyError) as caught:
        schema.validate(compose([override]))
    assert key in str(caught.value) and "engine.extra" in str(caught.value)


def test_extra_engine_arguments_pass_the_schema_check():
    schema.validate(compose(["+engine.extra.swap_space=4"]))


@pytest.mark.parametrize(
    "override,key",
    [("engine.max_num_seqs=lots", "max_num_seqs"), ("prompt.temperature=warm", "temperature"), ("processor.batch_size=1.5", "batch_size")],
)
def test_wrong_type_fails_naming_it(override, key):
    with pytest.raises(ConfigCompositionException) as caught:
        compose([override])
    assert key in str(caught.value.__cause__ or caught.value)


def test_unknown_key_in_a_yaml_option_fails(tmp_path, monkeypatch):
    import shutil

    from runner import config as run_config

    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "model" / "typo.yaml").write_text("name: typo\nsource: hub\npath: x/y\ncontext_length: 10\nmax_len: 5\n")
    monkeypatch.setattr(run_config, "CONF_DIR", conf)
    with pytest.raises(ConfigCompositionException) as caught:
        compose(["model=typo"])
    assert "max_len" in str(caught.value.__cause__ or caught.value)


def test_unknown_group_option_fails_listing_the_choices():
    with pytest.raises(ConfigCompositionException) as caught:
        compose(["hw=tpu_v9"])
    message = str(caught.value)
    assert "tpu_v9" in message and "cpu" in message and "l4" in message


def test_outputs_keep_their_default_layout_under_paths_outputs():
    from runner import tracking

    for overrides, root in (([], "outputs"), (["paths.outputs=/data/runner"], "/data/runner")):
        cfg = compose(overrides, return_hydra_config=True)
        assert cfg.paths.outputs == root
        assert re.fullmatch(rf"{root}/runs/\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d", cfg.hydra.run.dir)
        assert re.fullmatch(rf"{root}/multirun/\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d", cfg.hydra.sweep.dir)
        assert tracking.resolve_uri(cfg.tracking, Path(cfg.paths.outputs)) == f"sqlite:///{(Path(root) / 'mlflow.db').resolve()}"


def test_no_module_hard_codes_the_outputs_folder():
    import runner

    package = Path(runner.__file__).parent
    found = [
        f"{path.relative_to(package)}:{number}" for path in package.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"""Path\(["']outputs["']\)|=\s*["']outputs["']""", line)
    ]
    assert [where.split(":")[0] for where in found] == ["schema.py"]  # PathsConfig's default, the one place
