"""python -m unifusion_core.train --config FILE [--field value ...]  (also under `accelerate launch`)."""
import logging
import sys

from ..errors import UniFusionError
from .config import parse_args


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        from .trainer import train

        out = train(parse_args(argv))
    except UniFusionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"exported {out}")
    return 0


sys.exit(main())
