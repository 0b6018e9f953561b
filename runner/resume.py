"""Finish a run that was killed or interrupted: `python -m runner.resume <run location> [--force] [key=value ...]`.

The location is the run's folder (outputs/runs/<date_time>) or its URI (s3://bucket/runs/<date_time>).
Rows already in results/ or failed/ are never run again; a finished run is left as it is.
The run's config.yaml is used as saved; a change to it, or `key=value` overrides, are refused
unless they cannot alter outputs (where Ray runs, batch sizes, tracking) and --force is given.
Secrets are not in the saved config: export HF_TOKEN / AWS_* again if the run needs them.
"""

import argparse
from pathlib import Path
from typing import List, Optional

from omegaconf import OmegaConf

from runner import app, cli, config, run_state, schema, storage


def load_run_config(location: storage.Location, overrides=()) -> schema.RunConfig:
    """The run's saved config (from its manifest if config.yaml is gone), typed by the schema."""
    saved = location.child(run_state.CONFIG)
    if saved.exists():
        raw = OmegaConf.create(saved.read_text())
    else:
        manifest = run_state.load(location)
        if manifest is None:
            raise run_state.ResumeError(f"{location} holds neither {run_state.CONFIG} nor {run_state.MANIFEST}: not a run's location. "
                                        "Fix: the location the run printed (its Hydra folder, or the URI under output.uri)")
        raw = manifest.config
    return config.to_object(config.typed(raw, overrides))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("location", help="the run's folder or URI")
    parser.add_argument("overrides", nargs="*", help="key=value settings that cannot alter outputs, e.g. ray.address=auto (needs --force)")
    parser.add_argument("--force", action="store_true", help="accept config changes that cannot alter outputs")
    parser.add_argument("--outputs-root", type=Path, help="the folder of the local MLflow store (default: the run's paths.outputs)")
    # Intermixed: `<location> --force key=value` (the README's form) leaves plain parse_args
    # with the overrides unclaimed once the empty list was taken before --force.
    return parser.parse_intermixed_args(argv)


def main() -> None:
    cli.command(resume)


def resume(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        location = storage.resolve(args.location)
    except storage.StorageError as error:
        raise run_state.ResumeError(f"{args.location}: {error}. Fix: the run's folder or URI, as the run printed it") from None
    cfg = load_run_config(location, args.overrides)
    outcome = app.run(cfg, Path(location.path), outputs_root=args.outputs_root, resume=True, force=args.force, location=location)
    print(outcome.summary(), flush=True)
    return 0


if __name__ == "__main__":
    main()
