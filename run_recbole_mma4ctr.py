"""Command line: python run_recbole_mma4ctr.py --model=MMa4CTR --dataset=wechat [--key=value ...]

Every ``--key=value`` is a RecBole setting (``--epochs=3 --learning_rate=0.0005 --gpu_id=0``);
``--config_files="a.yaml b.yaml"`` adds YAML files. The last line printed is the path of the
run's JSON result record.
"""

import sys

from recbole_mma4ctr.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
