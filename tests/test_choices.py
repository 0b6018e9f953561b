"""Settings with a fixed list of values are Enums in the schema: Hydra refuses any other value
when the config is composed, naming the setting and its choices, and everything the config
becomes (yaml, JSON, MLflow params, a run's manifest) holds plain strings, which a later
runner reads back."""

import dataclasses
import os
import subprocess
import sys
import typing

import pytest
import yaml
from hydra.errors import ConfigCompositionException

from runner import config as run_config, errors, readers, resume, run_state, schema, storage
from runner.config import compose, to_dict
from tests.e2e_helpers import ROOT


def choice_settings():
    """(dotted key, Enum) for every setting of the schema whose type is a Choice."""
    found = []
    for section in dataclasses.fields(schema.RunConfig):
        if not dataclasses.is_dataclass(section.default_factory):
            continue
        for name, kind in typing.get_type_hints(section.default_factory).items():
            if isinstance(kind, type) and issubclass(kind, schema.Choice):
                found.append((f"{section.name}.{name}", kind))
    return found


CHOICES = choice_settings()
EVERY_VALUE = [(key, member.value) for key, kind in CHOICES for member in kind]


def test_the_closed_settings_are_choices():
    assert {key for key, _ in CHOICES} >= {
        "model.source", "model.weights", "dataset.source", "dataset.on_duplicate_id", "output.format", "errors.on_row_error",
    }


@pytest.mark.parametrize("kind", sorted({kind for _, kind in CHOICES}, key=lambda k: k.__name__), ids=lambda k: k.__name__)
def test_each_member_is_named_by_its_value(kind):
    # OmegaConf reads a member by its name and to_container(enum_to_str=True) writes its name.
    assert [m.name for m in kind] == [m.value for m in kind]
    assert all(m == m.value and str(m) == m.value and f"{m}" == m.value for m in kind)


@pytest.mark.parametrize("key,kind", CHOICES, ids=[key for key, _ in CHOICES])
def test_a_value_outside_the_choices_is_refused_at_compose_naming_the_setting_and_choices(key, kind):
    with pytest.raises(ConfigCompositionException) as caught:
        compose([f"{key}=nonsense"])
    message = str(caught.value.__cause__)
    assert key in message and "nonsense" in message
    assert f"[{', '.join(m.value for m in kind)}]" in message


def test_the_command_line_refuses_a_bad_choice_with_exit_2_and_leaves_no_run_folder(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "runner", "output.format=csvv"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == errors.EXIT_REFUSED, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert "output.format" in done.stderr and "expected one of [parquet, jsonl]" in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key,value", EVERY_VALUE, ids=[f"{k}={v}" for k, v in EVERY_VALUE])
def test_every_choice_becomes_a_plain_string_and_reads_back(key, value):
    plain = to_dict(compose([f"{key}={value}"]))
    section, name = key.split(".")
    assert type(plain[section][name]) is str and plain[section][name] == value
    saved = yaml.safe_dump(plain)  # config.yaml; refuses any object that is not plain data
    assert f"{name}: {value}\n" in saved
    again = run_config.typed(yaml.safe_load(saved))
    assert isinstance(again[section][name], schema.Choice) and again[section][name] == value
    assert run_state.config_changes(plain, to_dict(again)) == []


def test_the_readers_take_exactly_the_schemas_choices():
    assert set(readers.SOURCES) == {m.value for m in schema.DatasetSource}
    assert set(readers.ON_DUPLICATE_ID) == {m.value for m in schema.DuplicateIds}


def older_run(tmp_path):
    """A run folder as a runner before the Enums and paths.outputs wrote it: plain strings,
    no paths section, in config.yaml and the manifest alike."""
    config = to_dict(compose())
    del config["paths"]
    location = storage.resolve(str(tmp_path / "run"))
    location.child(run_state.CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
    run_state.save(location, run_state.Manifest(config=config, input={}, id_column="id"))
    return location, config


def test_a_run_saved_with_plain_strings_and_no_paths_resumes_unchanged(tmp_path):
    location, saved = older_run(tmp_path)
    cfg = resume.load_run_config(location)
    assert cfg.output.format == schema.OutputFormat.parquet and cfg.errors.on_row_error == "continue"
    assert cfg.paths.outputs == "outputs"  # the place such a run used
    manifest = run_state.load(location)
    assert run_state.check_resumable(manifest, to_dict(cfg), {}, force=False, where=str(location)) == []
    (tmp_path / "run" / run_state.CONFIG).unlink()  # config.yaml lost: the manifest's copy is read
    assert to_dict(resume.load_run_config(location)) == to_dict(cfg)


def test_a_resume_still_names_a_real_change_in_an_older_run(tmp_path):
    location, _ = older_run(tmp_path)
    cfg = resume.load_run_config(location, ["output.format=jsonl"])
    with pytest.raises(run_state.ResumeError, match="output.format: 'parquet' -> 'jsonl'"):
        run_state.check_resumable(run_state.load(location), to_dict(cfg), {}, force=True, where=str(location))


def test_a_resume_override_outside_the_choices_is_a_config_error(tmp_path):
    location, _ = older_run(tmp_path)
    with pytest.raises(errors.ConfigError, match=r"expected one of \[parquet, jsonl\]") as caught:
        resume.load_run_config(location, ["output.format=csvv"])
    assert errors.exit_code(caught.value) == errors.EXIT_REFUSED
