"""Finish a run that was killed or interrupted: `python -m runner.resume outputs/runs/<run>`.

Reads the run's saved config.yaml and runs it again in the same folder; the checkpoint
there makes Ray Data skip every row already written, so each row ends up once.
Secrets are not in the saved config: export HF_TOKEN again if the model needs it.
"""

import argparse
import logging
import sys
from pathlib import Path

from omegaconf import OmegaConf

from runner import app, preflight, schema


def load_run_config(run_dir: Path):
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise FileNotFoundError(f"{saved} not found: is {run_dir} a run folder (outputs/runs/<date_time>)?")
    return OmegaConf.merge(OmegaConf.structured(schema.RunConfig), OmegaConf.load(saved))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--outputs-root", type=Path, default=Path("outputs"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    try:
        cfg = load_run_config(args.run_dir)
        outcome = app.run(cfg, args.run_dir, outputs_root=args.outputs_root, resume=True)
    except (FileNotFoundError, preflight.PreflightError, schema.UnknownKeyError) as error:
        logging.getLogger("runner").error("%s", error)
        sys.exit(2)
    print(f"resumed {args.run_dir}: {int(outcome.metrics.get('rows_ok', 0))} rows ok, {int(outcome.metrics.get('rows_failed', 0))} failed")


if __name__ == "__main__":
    main()
