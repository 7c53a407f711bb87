"""The settings a dataset build reads, and the ones it writes, recorded while it runs.

Why: a built dataset may be reused (``prepared_store``) only where the build would give the same
result. The build is deterministic code; its inputs are the data files, the random state it
starts from, and the settings it reads. Recording every key it reads, with the value it read,
names exactly the settings it depends on: a later cell whose config has the same value for each
of those keys would build the same dataset, whatever else differs (a learning rate, the epochs).
A key looked up and found missing is recorded as missing. Code that walks the whole config
(``keys()``, ``items()``, a copy) makes every key an input.

The build also writes settings (``train_profile``'s effective value, ``+mm``'s
``numerical_features``), directly or by changing a value it read in place; those keys' final
values are recorded too, so a cell that reuses the dataset gets the same config as one that
built it (``replay``).

Reads go through the config's ``final_config_dict`` (RecBole's ``Config.__getitem__``,
``__contains__`` and attribute access, and the project's ``settings.setting``), which is swapped
for a recording dict while the build runs and swapped back after.
"""

from __future__ import annotations

import copy
import json
from contextlib import contextmanager

from ..record import plain

MISSING = "<missing>"


def canonical(value) -> str:
    """A value as compared between two configs: its type and its JSON-safe form (``record.plain``)."""
    return json.dumps([type(value).__name__, plain(value)], sort_keys=True, default=str)


class RecordingDict(dict):
    """A config dict that notes the first value read of each key not written before it."""

    def __init__(self, values):
        super().__init__(values)
        self.reads: dict[str, str] = {}
        self.written: set = set()
        self.read_before_write: dict = {}
        self.everything = False

    def note(self, key) -> None:
        if key in self.reads or key in self.written:
            return
        if dict.__contains__(self, key):
            value = dict.__getitem__(self, key)
            self.reads[key] = canonical(value)
            self.read_before_write[key] = copy.deepcopy(value)
        else:
            self.reads[key] = MISSING

    def note_all(self) -> None:
        self.everything = True
        for key in list(dict.keys(self)):
            self.note(key)

    def __getitem__(self, key):
        self.note(key)
        return dict.__getitem__(self, key)

    def get(self, key, default=None):
        self.note(key)
        return dict.get(self, key, default)

    def __contains__(self, key):
        self.note(key)
        return dict.__contains__(self, key)

    def __setitem__(self, key, value):
        self.written.add(key)
        dict.__setitem__(self, key, value)

    def __delitem__(self, key):
        self.written.add(key)
        dict.__delitem__(self, key)

    def setdefault(self, key, default=None):
        self.note(key)
        self.written.add(key)
        return dict.setdefault(self, key, default)

    def pop(self, key, *default):
        self.note(key)
        self.written.add(key)
        return dict.pop(self, key, *default)

    def update(self, *args, **kwargs):
        changes = dict(*args, **kwargs)
        self.written.update(changes)
        dict.update(self, changes)

    def keys(self):
        self.note_all()
        return dict.keys(self)

    def items(self):
        self.note_all()
        return dict.items(self)

    def values(self):
        self.note_all()
        return dict.values(self)

    def __iter__(self):
        self.note_all()
        return dict.__iter__(self)

    def copy(self):
        self.note_all()
        return dict(dict.items(self))

    def __reduce_ex__(self, protocol):
        self.note_all()
        return dict, (dict(dict.items(self)),)


class Recorded:
    """What one build read (``reads``: key -> ``canonical`` value or ``MISSING``; ``everything``
    when it walked the whole config) and wrote (``writes``: key -> final value)."""

    def __init__(self):
        self.reads: dict[str, str] = {}
        self.writes: dict = {}
        self.everything = False


@contextmanager
def recording_reads(config):
    """While open, every key read from or written to ``config`` is recorded into the yielded ``Recorded``."""
    plain_values = config.final_config_dict
    recorder = RecordingDict(plain_values)
    config.final_config_dict = recorder
    recorded = Recorded()
    try:
        yield recorded
    finally:
        config.final_config_dict = plain_values
        plain_values.clear()
        plain_values.update(dict.items(recorder))
    changed = {key for key, before in recorder.read_before_write.items()
               if canonical(dict.__getitem__(recorder, key)) != canonical(before)}   # changed in place
    recorded.reads = dict(recorder.reads)
    recorded.everything = recorder.everything
    recorded.writes = {key: dict.get(plain_values, key, MISSING) for key in recorder.written | changed}


def same_reads(config, reads: dict, everything: bool, writes) -> bool:
    """Whether ``config`` holds, for every key a build read, the value it read (and, when that
    build walked the whole config, no key it did not see)."""
    values = getattr(config, "final_config_dict", config)
    for key, value in reads.items():
        now = canonical(values[key]) if key in values else MISSING
        if now != value:
            return False
    if everything and set(values) - set(reads) - set(writes):
        return False
    return True


def replay(config, writes: dict) -> None:
    """Set the settings a build wrote to the values it left them at."""
    for key, value in writes.items():
        if value == MISSING:
            config.final_config_dict.pop(key, None)
        else:
            config[key] = value
