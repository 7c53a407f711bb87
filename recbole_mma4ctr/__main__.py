"""``python -m recbole_mma4ctr ...`` and the ``recbole-mma4ctr`` console script.

The same command line as ``python run_recbole_mma4ctr.py ...`` in a clone (see ``cli.py``), for
an installed package: ``python -m recbole_mma4ctr --model=MMa4CTR --dataset=wechat``.
"""

import sys

from .cli import main


def run() -> int:
    """Entry point of the console script: the process's own arguments, exit status returned."""
    return main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(run())
