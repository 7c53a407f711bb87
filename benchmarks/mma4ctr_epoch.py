"""One MMa4CTR training epoch through the project against a raw PyTorch loop, alternating.

    python benchmarks/mma4ctr_epoch.py [--scale sample|full] [--workdir DIR] [--rounds 5] [--eval-rounds 3]
                                       [--threads 1 | --threads 1,2] [--burn N] [--key=value ...]

A (the project): the dataset as a run gets it (``prepared_store.prepared_datasets``: built, or
mapped from the store in ``DIR/cache/prepared``), then RecBole's ``data_preparation`` (under
``batches.sliced_batches``, as a run calls it) builds the dataloaders from the WeChat data
(the generated ``--scale`` sample unless real files are in ``DIR/dataset/wechat``; written and
converted in ``--workdir`` once, then reused); one epoch is ``Trainer._train_epoch`` on RecBole's
TrainDataLoader. B (the reference): the same MLP (a copy of A's model at the same weights),
the same Adam settings and batch size, over tensors built beforehand (each training row's
model input, leave-one-out profiles included, and its label), the rows reshuffled with
``torch.randperm`` every epoch. Each round runs A then B; the ratio A / B of each round is
printed and the median of ``--rounds`` rounds is the figure (a shared machine's load moves both
alike within a round). Then where the time goes: A's loader (sampler + collate + gather), the
gather alone (``dataset[index]``: inter columns, user and item features, the rows' own
profiles), the model step (the rest), B's gather and step. Last, ``--eval-rounds`` rounds of
(A's epoch, one valid scoring pass, one test scoring pass), each timed in wall and in CPU
seconds (the process's own, which a busy machine disturbs less): the medians of valid and test
as shares of the epoch.

``--threads 1,2``: instead of B, A with 1 thread against A with 2 threads, alternating (the
``torch_threads`` measurement). ``--burn N`` runs N CPU-burning processes beside it (a loaded
machine) and stops them at the end. The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def build(scale: str, extra: dict):
    """Config, dataloaders, model and trainer exactly as a run builds them."""
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_mma4ctr.data.batches import sliced_batches
    from recbole_mma4ctr.data.prepared_store import built_splits, prepared_datasets
    from recbole_mma4ctr.config import build_config
    from recbole_mma4ctr.prepare.sources import ensure_dataset
    from recbole_mma4ctr.utils import get_model, get_trainer

    overrides = {"synthetic_scale": scale, "show_progress": "False", "log_wandb": "False", **extra}
    config = build_config("MMa4CTR", "wechat", None, overrides)
    init_seed(config["seed"], config["reproducibility"])
    ensure_dataset(config)
    prepared = prepared_datasets(config)
    with sliced_batches(), built_splits(prepared):
        train_data, valid_data, test_data = data_preparation(config, prepared.dataset)
    model = get_model("MMa4CTR")(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], "MMa4CTR")(config, model)
    return config, train_data, valid_data, test_data, model, trainer


def prebuilt_inputs(train_dataset, model, chunk: int = 1 << 18):
    """B's tensors: every training row's model input [rows, input_size] and label."""
    import torch

    n = len(train_dataset)
    inputs = torch.empty((n, model.input_size), dtype=torch.float32)
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        inputs[start:start + len(rows)] = model.concat_input(train_dataset[rows])
    return inputs, train_dataset.inter_feat[model.LABEL].float().clone()


class RawLoop:
    """The reference: the same MLP trained by a plain loop over prebuilt tensors."""

    def __init__(self, model, config, inputs, labels):
        import torch

        self.model = copy.deepcopy(model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config["learning_rate"],
                                          weight_decay=config["weight_decay"] or 0.0)
        self.inputs, self.labels = inputs, labels
        self.batch = int(config["train_batch_size"])
        self.generator = torch.Generator().manual_seed(int(config["seed"]))
        self.gather_seconds = 0.0

    def epoch(self) -> float:
        import torch

        model, loss_fn = self.model, self.model.loss
        model.train()
        order = torch.randperm(len(self.labels), generator=self.generator)
        total, gathered = 0.0, 0.0
        for start in range(0, len(order), self.batch):
            rows = order[start:start + self.batch]
            began = time.perf_counter()
            x, y = self.inputs.index_select(0, rows), self.labels.index_select(0, rows)
            gathered += time.perf_counter() - began
            self.optimizer.zero_grad()
            loss = loss_fn(model.classifier(model.features(x)).squeeze(-1), y)
            loss.backward()
            self.optimizer.step()
            total += loss.item()
        self.gather_seconds = gathered
        return total


def timed(fn) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def timed_both(fn) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def evaluation_shares(project, trainer, valid_data, test_data, rounds: int) -> None:
    """Rounds of (epoch, valid, test), each in wall and CPU seconds; the shares' medians."""
    shares = {"valid": [], "test": [], "valid cpu": [], "test cpu": []}
    for round_ in range(rounds):
        epoch = timed_both(project)
        valid = timed_both(lambda: trainer.evaluate(valid_data, load_best_model=False))
        test = timed_both(lambda: trainer.evaluate(test_data, load_best_model=False))
        for name, (wall, cpu) in (("valid", valid), ("test", test)):
            shares[name].append(wall / epoch[0])
            shares[f"{name} cpu"].append(cpu / epoch[1])
        print(f"  round {round_ + 1}: epoch {epoch[0]:.3f} s (cpu {epoch[1]:.3f} s), valid {valid[0]:.3f} s "
              f"(cpu {valid[1]:.3f} s), test {test[0]:.3f} s (cpu {test[1]:.3f} s)  [load {load()}]", flush=True)
    median = {name: statistics.median(values) for name, values in shares.items()}
    print(f"  evaluation, median of {rounds}: valid {median['valid']:.1%} of an epoch (cpu {median['valid cpu']:.1%}), "
          f"test {median['test']:.1%} (cpu {median['test cpu']:.1%})")


def loader_seconds(train_data) -> float:
    """One pass over the dataloader, batches dropped as they come (as training does)."""
    def run():
        for _ in train_data:
            pass
    return timed(run)


def gather_seconds(train_data) -> float:
    """dataset[index] for as many batches of the same size as one epoch has (random rows)."""
    dataset, size = train_data._dataset, int(train_data.step)
    order = np.random.default_rng(0).permutation(len(dataset))

    def run():
        for start in range(0, len(order), size):
            dataset[order[start:start + size]]
    return timed(run)


def burners(count: int) -> list:
    code = "while True:\n    pass\n"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="sample", choices=["tiny", "sample", "full"])
    parser.add_argument("--workdir", default=None, help="where data are generated and converted (default: a temp folder)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--eval-rounds", type=int, default=3, help="rounds of (epoch, valid, test) for the shares")
    parser.add_argument("--threads", default=None, help="torch threads for both, or 'a,b' to compare A at a and b threads")
    parser.add_argument("--burn", type=int, default=0, help="CPU-burning processes to run beside it")
    args, rest = parser.parse_known_args(argv)
    extra = dict(item.lstrip("-").split("=", 1) for item in rest)
    workdir = Path(args.workdir) if args.workdir else Path(__import__("tempfile").mkdtemp(prefix="mma4ctr_epoch_"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)

    import torch

    from recbole_mma4ctr.threads import apply_torch_threads

    thread_counts = [int(t) for t in args.threads.split(",")] if args.threads else []
    compare_threads = len(thread_counts) == 2
    print(f"load average before: {load()}  (cores: {os.cpu_count()})", flush=True)
    started = time.perf_counter()
    config, train_data, valid_data, test_data, model, trainer = build(args.scale, extra)
    if not compare_threads:
        apply_torch_threads(thread_counts[0] if thread_counts else config["torch_threads"])
    rows = len(train_data._dataset)
    print(f"{args.scale}: {rows:,} training rows, batch {train_data.step}, model input {model.input_size}; "
          f"built in {time.perf_counter() - started:.1f} s; torch threads {torch.get_num_threads()}", flush=True)

    procs = burners(args.burn)
    try:
        epoch = [0]

        def project():
            trainer._train_epoch(train_data, epoch[0])
            epoch[0] += 1

        if compare_threads:
            def at(threads):
                def run():
                    apply_torch_threads(threads)
                    project()
                return run
            first, second = at(thread_counts[0]), at(thread_counts[1])
            names = (f"{thread_counts[0]} thread(s)", f"{thread_counts[1]} thread(s)")
        else:
            inputs, labels = prebuilt_inputs(train_data._dataset, model)
            raw = RawLoop(model, config, inputs, labels)
            first, second = project, raw.epoch
            names = ("project", "raw loop")
        first(), second()  # warm-up: allocator, first-touch pages
        ratios = []
        for round_ in range(args.rounds):
            a, b = timed(first), timed(second)
            ratios.append(a / b)
            print(f"round {round_ + 1}: {names[0]} {a:.3f} s ({rows / a / 1e3:.1f} k rows/s), "
                  f"{names[1]} {b:.3f} s ({rows / b / 1e3:.1f} k rows/s), ratio {a / b:.3f}  [load {load()}]", flush=True)
        print(f"median ratio {names[0]} / {names[1]} over {args.rounds} rounds: {statistics.median(ratios):.3f}")
        if compare_threads:
            return
        epoch_a = timed(project)
        loader, gathering = loader_seconds(train_data), gather_seconds(train_data)
        epoch_b = timed(raw.epoch)
        print(f"where the time goes (one more epoch each, load {load()}):")
        print(f"  project  {epoch_a:.3f} s: loader {loader:.3f} s ({loader / epoch_a:.0%}; of it gather/join "
              f"{gathering:.3f} s, sampler+collate {loader - gathering:.3f} s), model step {epoch_a - loader:.3f} s "
              f"({(epoch_a - loader) / epoch_a:.0%})")
        print(f"  raw loop {epoch_b:.3f} s: gather {raw.gather_seconds:.3f} s ({raw.gather_seconds / epoch_b:.0%}), "
              f"model step {epoch_b - raw.gather_seconds:.3f} s")
        evaluation_shares(project, trainer, valid_data, test_data, args.eval_rounds)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
