"""Re-log a finished run folder to MLflow: `python -m runner.track outputs/runs/<run>`.

For a run whose tracking store could not be reached; the results stay where they were.
"""

import argparse
import logging
from pathlib import Path

from runner import tracking


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--outputs-root", type=Path, default=Path("outputs"))
    parser.add_argument("--uri", help="log to this tracking store instead of the one the run was configured with")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    run_id = tracking.log_run_folder(args.run_dir, args.outputs_root, uri=args.uri)
    print(f"logged {args.run_dir} as MLflow run {run_id}")


if __name__ == "__main__":
    main()
