"""DQN hyperparameter search vs random search for a Fashion-MNIST CNN, at the same number of evaluations, in one run.

    python benchmarks/cnn_search.py                        # 3 seeds in one process, the config's budget
    python benchmarks/cnn_search.py --seeds 0 --quick      # a smoke run
    # seeds in parallel processes, then one table from their rows:
    for s in 0 1 2; do python benchmarks/cnn_search.py --seeds $s --workdir runs/bench_cnn_search_$s & done; wait
    python benchmarks/cnn_search.py --report runs/bench_cnn_search_*/rows.jsonl

The budget is ``configs/dqn_hpo_fashion.yaml``'s unless a flag sets it: DQN epochs and edits per epoch,
images per evaluation, and the epochs of the final full training (its ``TrainBestConfiguration``).
For each seed:
1. the DQN searches through ``cli.py fit --config configs/dqn_hpo_fashion.yaml`` (the file users
   run; only the flags below are set on top), with its own fresh evaluation cache, once for each
   value of ``--restart-from-best`` (the env's probability of starting an episode from the best
   configuration so far; 0 is the plain search); the number N of distinct configurations each had
   trained (validation episodes included) is read from its cache;
2. random search trains distinct configurations drawn uniformly from the same search space, with the
   same budget and evaluator (``datamodules.cnn_search.ConfigurationEvaluator``), up to the largest
   N; its draws are in a fixed order, so its first N evaluations are the random search of size N
   that each DQN variant is compared with;
3. each method's answer is chosen as the config's ``TrainBestConfiguration`` chooses it
   (``datamodules.cnn_search.select_by_full_training``): its ``--full-top-k`` best distinct
   configurations (highest validation accuracy under the search budget) are trained on the full
   training set (55k images) for the full epochs, by the same ``train_classifier``, the one with the
   best validation accuracy (5k held-out images) is kept, and its test accuracy on the 10k test
   images is the method's result. The search's own best is always a finalist, so its test accuracy
   (the ``--full-top-k 1`` result) is reported beside it.
The evaluation budget's seed (training subset, validation split, initial weights) and the DQN's
seed are the benchmark seed; the full runs use seed 0 for both methods. Bar: mean test accuracy of
the DQN's answer >= random search's; the spread (std over seeds) is printed beside it.

``--from-caches`` skips steps 1-2 and takes the searches from the evaluation caches an earlier run
left in ``--workdir`` (their records, in the order they were trained, are the searches; the search
seconds are then the sum of the evaluations' training seconds): a new selection step on the same searches.
"""

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cli  # noqa: E402
from datamodules.cnn_search import Budget, CNNSearchEnv, ConfigurationEvaluator, EvaluationCache, make_search_env, select_by_full_training  # noqa: E402
from datamodules.vision import VisionDataModule  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "dqn_hpo_fashion.yaml")


def dqn_search(seed: int, restart_from_best: float, args, workdir: Path) -> tuple[CNNSearchEnv, float]:
    cache = workdir / f"cache_dqn_{seed}_restart{restart_from_best:g}"
    overrides = {
        "train_subset": args.train_subset, "val_size": args.val_size, "epochs": 1, "seed": seed, "cache_dir": str(cache),
        "restart_from_best": restart_from_best,
    }  # fmt: skip
    steps = args.dqn_epochs * args.steps_per_epoch
    start = time.perf_counter()
    run = cli.main(
        [
            "fit", "--config", CONFIG,
            "--seed_everything", str(seed),
            "--trainer.max_epochs", str(args.dqn_epochs),
            "--trainer.logger.init_args.save_dir", str(workdir / "runs"),
            "--trainer.logger.init_args.name", f"dqn_seed{seed}_restart{restart_from_best:g}",
            "--trainer.callbacks", '[{"class_path": "callbacks.search_log.SearchLog"}]',
            "--data.init_args.steps_per_epoch", str(args.steps_per_epoch),
            "--data.init_args.learning_starts", str(min(args.learning_starts, args.steps_per_epoch)),
            "--data.init_args.exploration_steps", str(int(args.exploration_fraction * steps)),
            *(f"--data.init_args.env_kwargs.{k}={v}" for k, v in overrides.items()),
        ]
    )  # fmt: skip
    seconds = time.perf_counter() - start
    return make_search_env(run.datamodule.hparams.env_id, run.datamodule.hparams.env_kwargs), seconds


def dqn_method(restart_from_best: float) -> str:
    return "dqn" if restart_from_best == 0 else f"dqn restart {restart_from_best:g}"


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


def full_data(data_args: dict, quick: bool) -> VisionDataModule:
    """The 55k training images (``--quick``: 5k) and the 5k held-out validation images the finalists are compared on."""
    return VisionDataModule(val_size=5000, train_subset=5000 if quick else None, batch_size=128, seed=0, **data_args)


def cached_searches(seed: int, args, workdir: Path) -> list[tuple[str, ConfigurationEvaluator, float, list[dict]]]:
    """The searches an earlier run of this benchmark left in ``workdir``'s caches, for ``--from-caches``."""
    budget = Budget(train_subset=args.train_subset, val_size=args.val_size, seed=seed)
    searches = []
    for p in args.restart_from_best:
        cache = workdir / f"cache_dqn_{seed}_restart{p:g}"
        records = EvaluationCache(cache).records(budget)
        if not records:
            sys.exit(f"--from-caches: no evaluations under {budget} in {cache}")
        searches.append((dqn_method(p), ConfigurationEvaluator(budget, str(cache)), sum(r["seconds"] for r in records), records))
    drawn = EvaluationCache(workdir / f"cache_random_{seed}").records(budget)
    for n in sorted({len(records) for *_, records in searches}):
        if len(drawn) < n:
            sys.exit(f"--from-caches: random search of seed {seed} has {len(drawn)} evaluations, fewer than the DQN's {n}")
        searches.append(("random", searches[0][1], sum(r["seconds"] for r in drawn[:n]), drawn[:n]))
    return searches


def run_searches(seed: int, args, workdir: Path) -> list[tuple[str, ConfigurationEvaluator, float, list[dict]]]:
    """Steps 1-2: the DQN variants' searches, then random search up to the largest N; (method, evaluator, seconds, records) each."""
    searches, space = [], None
    for p in args.restart_from_best:
        env, seconds = dqn_search(seed, p, args, workdir)
        searches.append((dqn_method(p), env.evaluator, seconds, env.evaluator.records()))
        space = env.space
    evaluations = [len(records) for *_, records in searches]
    rand, rand_seconds = random_search(seed, max(evaluations), searches[0][1], space, workdir)
    drawn = rand.records()  # in the order drawn: the first N are the random search of size N
    return searches + [("random", rand, rand_seconds * n / len(drawn), drawn[:n]) for n in sorted(set(evaluations))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    config = yaml.safe_load(Path(CONFIG).read_text())
    data, max_epochs = config["data"]["init_args"], config["trainer"]["max_epochs"]
    final = next(c["init_args"] for c in config["trainer"]["callbacks"] if c["class_path"].endswith("TrainBestConfiguration"))
    full_epochs = final["epochs"]
    env = data["env_kwargs"]
    parser.set_defaults(exploration_fraction=data["exploration_steps"] / (max_epochs * data["steps_per_epoch"]), learning_starts=data["learning_starts"])
    parser.add_argument("--dqn-epochs", type=int, default=max_epochs, help="DQN epochs (each --steps-per-epoch edits plus the greedy episodes)")
    parser.add_argument("--steps-per-epoch", type=int, default=data["steps_per_epoch"], help="edits per DQN epoch (a multiple of the config's train_freq)")
    parser.add_argument("--train-subset", type=int, default=env["train_subset"], help="training images per evaluation")
    parser.add_argument("--val-size", type=int, default=env["val_size"], help="validation images per evaluation")
    parser.add_argument("--full-epochs", type=int, default=full_epochs, help="epochs of the final full training of each method's finalists")
    parser.add_argument("--full-top-k", type=int, default=final.get("top_k", 1), help="finalists per method trained fully; the best on validation is its answer")
    parser.add_argument("--from-caches", action="store_true", help="take the searches from the caches an earlier run left in --workdir")
    parser.add_argument("--restart-from-best", type=float, nargs="+", default=[float(env.get("restart_from_best", 0.0))],
                        help="DQN variants: the env's probability of starting an episode from the best configuration so far")
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
    if args.from_caches:
        (workdir / "rows.jsonl").unlink(missing_ok=True)
    else:
        shutil.rmtree(workdir, ignore_errors=True)  # fresh caches: every evaluation of this run is trained in this run
    workdir.mkdir(parents=True, exist_ok=True)

    rows = []
    for seed in args.seeds:
        searches = cached_searches(seed, args, workdir) if args.from_caches else run_searches(seed, args, workdir)
        data = full_data(searches[0][1].data_args, args.quick)
        trained: dict[str, dict] = {}  # one full training per distinct configuration (it is deterministic)
        for method, evaluator, seconds, records in searches:
            answer = select_by_full_training(records, args.full_top_k, data, args.full_epochs, seed=0, trained=trained)
            search_best = answer["finalists"][0]
            row = {
                "seed": seed, "method": method, "train_subset": args.train_subset, "full_epochs": args.full_epochs,
                "full_train_images": 5000 if args.quick else 55000, "full_top_k": args.full_top_k, "evaluations": len(records),
                "search_seconds": round(seconds, 1), "best_search_val_acc": search_best["search_val_acc"],
                "search_best_test_acc": search_best["test_acc"], "chosen_search_rank": answer["search_rank"],
                "chosen_search_val_acc": answer["search_val_acc"], "full_val_acc": answer["val_acc"], "test_acc": answer["test_acc"],
                "full_seconds": round(sum(f["seconds"] for f in answer["finalists"]), 1), "best_config": answer["config"],
            }  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
            with open(workdir / "rows.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
    report(rows, args)


def report(rows: list[dict], args) -> None:
    for r in rows:  # rows written before the finalists step: one finalist, the search's best
        r.setdefault("full_top_k", 1), r.setdefault("chosen_search_rank", 1), r.setdefault("search_best_test_acc", r["test_acc"])
    first = rows[0]
    print(f"\nDQN vs random search, same number of CNN evaluations per seed ({first['train_subset']} training images, 1 epoch each);")
    print(f"each method's {first['full_top_k']} best distinct configuration(s) then trained {first['full_epochs']} epoch(s) on "
          f"{first['full_train_images']} training images, the best on validation kept\n")
    print(f"{'seed':>4} {'method':>16} {'evals':>6} {'search s':>9} {'search val':>11} {'its test':>9} {'chosen':>7} {'full val':>9} {'test acc':>9}  chosen configuration")
    for r in rows:
        print(f"{r['seed']:>4} {r['method']:>16} {r['evaluations']:>6} {r['search_seconds']:>9.0f} {r['best_search_val_acc']:>11.4f} "
              f"{r['search_best_test_acc']:>9.4f} {r['chosen_search_rank']:>7} {r['full_val_acc']:>9.4f} {r['test_acc']:>9.4f}  {r['best_config']}")
    random = {(r["seed"], r["evaluations"]): r for r in rows if r["method"] == "random"}
    for method in dict.fromkeys(r["method"] for r in rows if r["method"] != "random"):
        dqn = [r for r in rows if r["method"] == method]
        pairs = [(r, random[r["seed"], r["evaluations"]]) for r in dqn if (r["seed"], r["evaluations"]) in random]
        print(f"\n{method} vs random search at the same number of evaluations, {len(pairs)} seeds:")
        means = {}
        for side, name in ((0, method), (1, "random")):
            test = np.array([pair[side]["test_acc"] for pair in pairs])
            face = np.array([pair[side]["search_best_test_acc"] for pair in pairs])
            val = np.array([pair[side]["best_search_val_acc"] for pair in pairs])
            means[side] = test.mean()
            print(f"{name:>16}: test acc {test.mean():.4f} +- {test.std():.4f} (min {test.min():.4f}, max {test.max():.4f}); "
                  f"the search's best alone {face.mean():.4f} +- {face.std():.4f}; best search val acc {val.mean():.4f} +- {val.std():.4f}")
        wins = sum(a["test_acc"] > b["test_acc"] for a, b in pairs)
        verdict = "MET" if means[0] >= means[1] else "NOT met"
        print(f"bar ({method} mean test acc >= random search's): {verdict} ({means[0]:.4f} vs {means[1]:.4f}; higher in {wins} of {len(pairs)} seeds)")


if __name__ == "__main__":
    main()
