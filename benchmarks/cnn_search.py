"""DQN hyperparameter search vs random search for a Fashion-MNIST CNN, at the same number of evaluations, in one run.

    python benchmarks/cnn_search.py                        # 3 seeds in one process, the budget below
    python benchmarks/cnn_search.py --seeds 0 --quick      # a smoke run
    # seeds in parallel processes, then one table from their rows:
    for s in 0 1 2; do python benchmarks/cnn_search.py --seeds $s --workdir runs/bench_cnn_search_$s & done; wait
    python benchmarks/cnn_search.py --report runs/bench_cnn_search_*/rows.jsonl

For each seed:
1. the DQN searches through ``cli.py fit --config configs/dqn_hpo_fashion.yaml`` (the file users
   run; only the number of epochs, the exploration schedule and the evaluation budget are set from
   the flags below), with its own fresh evaluation cache; the number N of distinct configurations
   it had trained (validation episodes included) is read from that cache;
2. random search trains N distinct configurations drawn uniformly from the same search space,
   with the same budget and evaluator (``datamodules.cnn_search.ConfigurationEvaluator``);
3. each method's best configuration (highest validation accuracy under the search budget) is
   trained on the full training set (55k images) for ``--full-epochs`` epochs, by the same
   ``train_classifier``, and its test accuracy measured on the 10k test images.
The evaluation budget's seed (training subset, validation split, initial weights) and the DQN's
seed are the benchmark seed; the full runs use seed 0 for both methods. Bar: mean test accuracy of
the DQN's best >= random search's best; the spread (std over seeds) is printed beside it.
"""

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cli  # noqa: E402
from callbacks.search_log import ranked  # noqa: E402
from datamodules.cnn_search import CNNSearchEnv, ConfigurationEvaluator, make_search_env  # noqa: E402
from datamodules.vision import VisionDataModule  # noqa: E402
from modules.cnn_classifier import train_classifier  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "dqn_hpo_fashion.yaml")


def dqn_search(seed: int, args, workdir: Path) -> tuple[CNNSearchEnv, float]:
    cache = workdir / f"cache_dqn_{seed}"
    overrides = {
        "train_subset": args.train_subset, "val_size": args.val_size, "epochs": 1, "seed": seed, "cache_dir": str(cache),
    }  # fmt: skip
    steps = args.dqn_epochs * args.steps_per_epoch
    start = time.perf_counter()
    run = cli.main(
        [
            "fit", "--config", CONFIG,
            "--seed_everything", str(seed),
            "--trainer.max_epochs", str(args.dqn_epochs),
            "--trainer.logger.init_args.save_dir", str(workdir / "runs"),
            "--trainer.logger.init_args.name", f"dqn_seed{seed}",
            "--trainer.callbacks", '[{"class_path": "callbacks.search_log.SearchLog"}]',
            "--data.init_args.steps_per_epoch", str(args.steps_per_epoch),
            "--data.init_args.learning_starts", str(min(48, args.steps_per_epoch)),
            "--data.init_args.exploration_steps", str(int(0.6 * steps)),
            *(f"--data.init_args.env_kwargs.{k}={v}" for k, v in overrides.items()),
        ]
    )  # fmt: skip
    seconds = time.perf_counter() - start
    return make_search_env(run.datamodule.hparams.env_id, run.datamodule.hparams.env_kwargs), seconds


def random_search(seed: int, count: int, template: ConfigurationEvaluator, space, workdir: Path) -> tuple[ConfigurationEvaluator, float]:
    evaluator = ConfigurationEvaluator(template.budget, str(workdir / f"cache_random_{seed}"), **template.data_args)
    rng = np.random.default_rng(10_000 + seed)
    seen: set[str] = set()
    start = time.perf_counter()
    while len(seen) < min(count, space.num_configurations):
        config = space.sample(rng)
        key = json.dumps(config, sort_keys=True)
        if key not in seen:
            seen.add(key)
            evaluator(config)
    return evaluator, time.perf_counter() - start


def full_training(config: dict, data_args: dict, epochs: int, train_subset: int | None = None) -> dict:
    """``config`` trained on the 55k training images (``train_subset``: fewer), then tested on the 10k test images."""
    data = VisionDataModule(val_size=5000, train_subset=train_subset, batch_size=128, seed=0, **data_args)
    return train_classifier(config, data, max_epochs=epochs, seed=0, test=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--dqn-epochs", type=int, default=3, help="DQN epochs (each --steps-per-epoch edits plus 2 greedy episodes)")
    parser.add_argument("--steps-per-epoch", type=int, default=30, help="edits per DQN epoch (a multiple of 6, the config's train_freq)")
    parser.add_argument("--train-subset", type=int, default=1000, help="training images per evaluation")
    parser.add_argument("--val-size", type=int, default=1000, help="validation images per evaluation")
    parser.add_argument("--full-epochs", type=int, default=1, help="epochs of the final full training of each method's best")
    parser.add_argument("--workdir", default="runs/benchmark_cnn_search")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 DQN epoch of 12 edits, 300 images, 1 full epoch on 5k images")
    parser.add_argument("--report", nargs="+", metavar="ROWS", help="print the table of rows.jsonl files written by earlier runs and exit")
    args = parser.parse_args()
    if args.report:
        rows = [json.loads(line) for path in args.report for line in Path(path).read_text().splitlines() if line.strip()]
        report(rows, args)
        return
    if args.quick:
        args.dqn_epochs, args.steps_per_epoch, args.train_subset, args.val_size, args.full_epochs = 1, 12, 300, 300, 1
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    workdir = Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)  # fresh caches: every evaluation of this run is trained in this run

    rows = []
    for seed in args.seeds:
        env, dqn_seconds = dqn_search(seed, args, workdir)
        dqn = env.evaluator
        rand, rand_seconds = random_search(seed, len(dqn.records()), dqn, env.space, workdir)
        for method, evaluator, seconds in (("dqn", dqn, dqn_seconds), ("random", rand, rand_seconds)):
            records = evaluator.records()
            best = ranked(records)[0]
            full = full_training(best["config"], evaluator.data_args, args.full_epochs, 5000 if args.quick else None)
            row = {
                "seed": seed, "method": method, "train_subset": args.train_subset, "full_epochs": args.full_epochs,
                "full_train_images": 5000 if args.quick else 55000, "evaluations": len(records), "search_seconds": round(seconds, 1),
                "best_search_val_acc": best["val_acc"], "full_val_acc": full["val_acc"], "test_acc": full["test_acc"],
                "full_seconds": round(full["seconds"], 1), "best_config": best["config"],
            }  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
            with open(workdir / "rows.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
    report(rows, args)


def report(rows: list[dict], args) -> None:
    first = rows[0]
    print(f"\nDQN vs random search, same number of CNN evaluations per seed ({first['train_subset']} training images, 1 epoch each);")
    print(f"each method's best configuration then trained {first['full_epochs']} epoch(s) on {first['full_train_images']} training images\n")
    print(f"{'seed':>4} {'method':>7} {'evals':>6} {'search s':>9} {'search val':>11} {'full val':>9} {'test acc':>9}  best configuration")
    for r in rows:
        print(f"{r['seed']:>4} {r['method']:>7} {r['evaluations']:>6} {r['search_seconds']:>9.0f} {r['best_search_val_acc']:>11.4f} "
              f"{r['full_val_acc']:>9.4f} {r['test_acc']:>9.4f}  {r['best_config']}")
    summary = {}
    for method in ("dqn", "random"):
        test = np.array([r["test_acc"] for r in rows if r["method"] == method])
        val = np.array([r["best_search_val_acc"] for r in rows if r["method"] == method])
        summary[method] = test.mean()
        print(f"{method:>7}: test acc {test.mean():.4f} +- {test.std():.4f} (min {test.min():.4f}, max {test.max():.4f}); "
              f"best search val acc {val.mean():.4f} +- {val.std():.4f}  over {len(test)} seeds")
    verdict = "MET" if summary["dqn"] >= summary["random"] else "NOT met"
    print(f"bar (DQN mean test acc >= random search's): {verdict} ({summary['dqn']:.4f} vs {summary['random']:.4f})")


if __name__ == "__main__":
    main()
