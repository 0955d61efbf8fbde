"""python -m unifusion_core.train --config FILE [--field value ...]  (also under `accelerate launch`);
python -m unifusion_core.train plan --preset paper --resolution 1024 --gpus 8 ...  (the planner)."""
import sys

from .config import cli_main


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["plan"]:
        from .plan import main as plan_main

        return plan_main(argv[1:])

    def run(t):
        from .trainer import train

        return train(t)

    return cli_main(argv, run, "exported {}")


sys.exit(main())
