"""Run configs as the code below the entry point takes them: runner.schema's dataclasses
(runner.config.to_object of what a command line composes), or one section of them."""

from runner import schema
from runner.config import compose, to_object


def typed_config(*overrides: str) -> schema.RunConfig:
    """What `python -m runner <overrides>` hands app.run."""
    return to_object(compose(list(overrides)))


def dataset(**settings) -> schema.DatasetConfig:
    """A dataset section of these settings, the others at the schema's defaults; a choice may be
    given as its string."""
    for key, kind in (("source", schema.DatasetSource), ("on_duplicate_id", schema.DuplicateIds)):
        if key in settings:
            settings[key] = kind(settings[key])
    return schema.DatasetConfig(**settings)


def prompt(**settings) -> schema.PromptConfig:
    """A prompt section of these settings, the others at the schema's defaults."""
    return schema.PromptConfig(**settings)
