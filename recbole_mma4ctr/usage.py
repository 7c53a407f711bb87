"""The command line's help: ``--help`` / ``-h``, ``--compare --help`` (``--tune``, ``--study``) and
``--help=SETTING``.

Every default shown is read from ``properties/`` when the help is asked for (through the registry of
known settings, ``known_settings.py``), never copied here: the command line's own options from
``properties/commands.yaml``, the settings from the layers of the default model on the default
dataset. What this module holds is only which settings are worth showing and the words around them.
"""

from __future__ import annotations

import textwrap

import yaml

from .known_settings import every_entry, file_entries, MODE_SECTIONS, Registry, shown_path, unknown
from .settings import command_options, properties_dir, read_yaml

PROGRAM = "run_recbole_mma4ctr.py"
# the command-line options and settings a user most often changes, shown by --help with their defaults
COMMON_OPTIONS = ("model", "dataset", "protocol", "marks", "config_files")
COMMON_SETTINGS = ("epochs", "learning_rate", "train_batch_size", "train_to", "seed", "synthetic_scale", "data_path",
                   "results_dir", "gpu_id")
# RecBole settings a mode's help shows beside its own options
MODE_SETTINGS = {"compare": ("train_to", "plateau_patience", "plateau_step_budget"), "tune": ("epochs",), "study": ()}
MODE_TEXT = {
    "compare": ("--compare [--key=value ...]",
                "Every model of --models trained on one split and scored with one set of metrics; each (model, seed) "
                "is a cell run on Ray. A rerun with the same settings skips the cells already done. Prints the "
                "path of comparison.md; exit 1 when a cell failed.",
                f"{PROGRAM} --compare --models=MMa4CTR,DIN --marks=1 --synthetic_scale=tiny"),
    "tune": ("--tune [--key=value ...]",
             "A Ray Tune search (ASHA) for --model over a hyper file's space (RecBole's format: name kind values), "
             "ranked on the validation metric only. Prints the path of best.yaml.",
             f"{PROGRAM} --tune --model=MMa4CTR --num_samples=2 --epochs=2 --synthetic_scale=tiny"),
    "study": ("--study=NAME [--key=value ...]",
              "One of the paper's sensitivity or ablation studies: a grid over one setting, every point a cell on "
              "Ray, tested after each mark. Prints the path of study.md.",
              f"{PROGRAM} --study=learning_rate --grid=0.001,0.0001 --marks=1 --synthetic_scale=tiny"),
}


def shown(value) -> str:
    """A default as a user would write it in a settings file: ``~``, ``true``, ``[10, 20]``."""
    if value is None:
        return "~"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def default_registry(mode: str = "run") -> Registry:
    """The settings of the default model on the default dataset (``properties/commands.yaml``)."""
    options = command_options(*MODE_SECTIONS["run"])
    return Registry(mode, [options["model"]], options["dataset"], options["protocol"])


def option_lines(mode: str) -> list[tuple[str, object, str, str]]:
    """(key, default, file, comment) of a mode's own options, the later section's entry winning."""
    path = properties_dir() / "commands.yaml"
    entries = {}
    for section in MODE_SECTIONS[mode]:
        entries.update(file_entries(path, section=section))
    return [(key, entry.value, shown_path(entry.path), entry.comment) for key, entry in entries.items()]


def setting_lines(keys, registry: Registry) -> list[tuple[str, object, str, str]]:
    """(key, default, file, comment) of RecBole settings as the registry's layers set them."""
    rows = []
    for key in keys:
        entry = registry.defaults[key]
        rows.append((key, entry.value, shown_path(entry.path), entry.comment))
    return rows


def table(rows) -> list[str]:
    """``  --key=default   comment (file)`` lines, aligned."""
    cells = [(f"--{key}={shown(value)}", f"{comment} ({where})" if comment else f"({where})")
             for key, value, where, comment in rows]
    width = max(len(left) for left, _ in cells)
    return [f"  {left.ljust(width)}  {right}" for left, right in cells]


def general_help() -> str:
    """What ``--help`` prints: the modes, the settings most often changed, examples, the docs."""
    options = command_options(*MODE_SECTIONS["run"])
    registry = default_registry()
    studies = ", ".join(sorted(path.stem for path in (properties_dir() / "studies").glob("*.yaml")))
    lines = [
        f"usage: {PROGRAM} [--compare | --tune | --study=NAME | --report=FOLDER] [--key=value ...]",
        "       (the same as `recbole-mma4ctr ...` and `python -m recbole_mma4ctr ...`)",
        "",
        "MMa4CTR (a multimodal CTR model) as a RecBole 1.2.1 plugin, compared with RecBole's baselines.",
        "",
        "modes:",
        "  (none)           one run of --model on --dataset, no Ray; prints the path of its record",
        "  --compare        every model of --models on one split, one cell per model on Ray; prints comparison.md",
        "  --tune           a Ray Tune search for --model over a hyper file; prints best.yaml",
        f"  --study=NAME     a paper study over one setting ({studies}); prints study.md",
        "  --report=FOLDER  report.md and report.html from the records of a results folder (nothing else with it)",
        "",
        f"settings most often changed (default for --model={options['model']} on --dataset={options['dataset']}, "
        "and the file that sets it):",
        *table([row for key in COMMON_OPTIONS for row in option_lines("run") if row[0] == key]
               + [row[:3] + ("",) for row in setting_lines(COMMON_SETTINGS, registry)]),
        "",
        "Any RecBole setting is given as --key=value (a value is read as a literal, never run). A key that no",
        "settings file defines stops the command with exit 2 (--allow_unknown_settings=KEY lets one through).",
        "",
        "examples:",
        f"  {PROGRAM} --model=MMa4CTR --dataset=wechat --synthetic_scale=tiny --epochs=1",
        f"  {PROGRAM} --compare --models=MMa4CTR,DIN --marks=1 --synthetic_scale=tiny",
        f"  {PROGRAM} --help=learning_rate",
        "",
        "more: --compare --help, --tune --help, --study --help; --help=SETTING shows one setting's default,",
        "      the file that sets it and its comment there.",
        "docs: README.md; docs/settings.md (where defaults live, the layers, unknown keys, --help)",
        "exit status: 0 done; 1 bad input or a failed run; 2 a bad setting or argument; 130 interrupted",
    ]
    return "\n".join(lines)


def mode_help(mode: str) -> str:
    """What ``--compare --help`` (``--tune``, ``--study``) prints: the mode's own options with their defaults."""
    if mode not in MODE_TEXT:
        return general_help()
    synopsis, what, example = MODE_TEXT[mode]
    rows = [row for row in option_lines(mode) if row[0] not in command_options("common")]
    shared = [row for row in option_lines(mode) if row[0] in command_options("common")]
    lines = [f"usage: {PROGRAM} {synopsis}", "", *textwrap.wrap(what, 100), "",
             "options (default, and the file that sets it):",
             *table(rows + setting_lines(MODE_SETTINGS[mode], default_registry(mode))), "",
             "shared with every mode:", *table(shared), ""]
    if mode == "tune":
        hyper = sorted(path.name for path in (properties_dir() / "hyper").glob("*.hyper"))
        lines += [f"hyper files in properties/hyper/: {', '.join(hyper)}", ""]
    if mode == "study":
        lines += ["studies in properties/studies/:"]
        for path in sorted((properties_dir() / "studies").glob("*.yaml")):
            study = read_yaml(path)
            lines.append(f"  {path.stem:<16} {study.get('title', '')} (paper {study.get('paper_section', '?')}): "
                         f"{study.get('parameter')} over {len(study.get('grid') or [])} value(s)")
        lines.append("")
    lines += ["Every other --key=value is a RecBole setting for every cell.", "", "example:", f"  {example}"]
    return "\n".join(lines)


def setting_help(key: str) -> str:
    """What ``--help=SETTING`` prints: the default for the default model and dataset, and every
    file RecBole or this project ships that sets the key, with its comment there."""
    found = every_entry(key)
    if not found:
        known = set(default_registry().known) | set(command_options(*MODE_SECTIONS["compare"], "tune", "study"))
        raise unknown(key, known, "", "RecBole 1.2.1 and this project set no such key (--help lists the modes)")
    options = command_options(*MODE_SECTIONS["run"])
    registry = default_registry()
    lines = []
    if key in registry.defaults:
        entry = registry.defaults[key]
        lines.append(f"{key}: {shown(entry.value)} for --model={options['model']} on --dataset={options['dataset']} "
                     f"({entry.where()})")
    else:
        lines.append(f"{key}: not a setting of --model={options['model']} on --dataset={options['dataset']}; "
                     f"set in the files below")
    lines.append("set in (a later layer wins: RecBole's files, then properties/ overall < dataset < model < "
                 "protocol, then --config_files and --key=value):")
    for entry in found:
        comment = f"  # {entry.comment or entry.above}" if entry.comment or entry.above else ""
        lines.append(f"  {entry.where()}: {shown(entry.value)}{comment}")
    return "\n".join(lines)
