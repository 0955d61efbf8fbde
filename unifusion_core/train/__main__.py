"""python -m unifusion_core.train --config FILE [--field value ...]  (also under `accelerate launch`)."""
import sys

from .config import cli_main


def main(argv=None) -> int:
    def run(t):
        from .trainer import train

        return train(t)

    return cli_main(argv, run, "exported {}")


sys.exit(main())
