"""Re-log a finished run to MLflow: `python -m runner.track <run location>`.

The location is the run's folder (outputs/runs/<run>) or its URI (s3://bucket/runs/<run>).
For a run whose tracking store could not be reached; the results stay where they were.
"""

import argparse
from pathlib import Path

from runner import cli, storage, tracking


def main() -> None:
    cli.command(track)


def track(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    # A string, not a Path: Path("s3://b/run") would fold the URI's "//".
    parser.add_argument("run_dir", help="the run's folder or URI")
    parser.add_argument("--outputs-root", type=Path, help="the folder of the local MLflow store (default: the run's paths.outputs)")
    parser.add_argument("--uri", help="log to this tracking store instead of the one the run was configured with")
    args = parser.parse_args(argv)
    run_id = tracking.log_run_folder(storage.resolve(args.run_dir), args.outputs_root, uri=args.uri)
    print(f"logged {args.run_dir} as MLflow run {run_id}")
    return 0


if __name__ == "__main__":
    main()
