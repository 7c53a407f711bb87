"""CI must install and test exactly as the README tells a user to."""

import pytest
import re

from conftest import REPO

pytestmark = pytest.mark.unit  # pure: no RecBole training, no Ray (python -m pytest -m unit)


def readme_commands():
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.startswith("python3 -m venv")]


def test_ci_runs_the_readme_install_and_test_command():
    commands = readme_commands()
    install_and_test = [c for c in commands if c.endswith("python -m pytest -q -n 2")]
    install_and_run = [c for c in commands if "run_recbole_mma4ctr.py --model=MMa4CTR --dataset=wechat" in c]
    assert len(install_and_test) == 1 and len(install_and_run) == 1
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert install_and_test[0] in ci_lines
    # both README commands install the same way
    assert install_and_run[0].split(" && python run_recbole")[0] == install_and_test[0].split(" && python -m pytest")[0]
