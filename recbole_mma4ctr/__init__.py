"""recbole-mma4ctr: MMa4CTR as a RecBole plugin.

Importing the package is cheap on purpose: no RecBole, torch or ray at import time, so the pure
modules (profiles, fusion, metrics math, prepare) can be used and tested on their own.
"""

__version__ = "0.1.0"
