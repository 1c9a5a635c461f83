"""gapbridge DQN vs Stable-Baselines3 DQN on CartPole-v1 with the RL Zoo hyperparameters, side by side in one run.

    python benchmarks/dqn_cartpole.py                      # 3 seeds, both libraries, ~15 min on 2 busy cores
    python benchmarks/dqn_cartpole.py --seeds 0 --quick    # a smoke run
    python benchmarks/dqn_cartpole.py --env acrobot        # our final greedy return on Acrobot (bar >= -85)
    python benchmarks/dqn_cartpole.py --env mountaincar    # ... on MountainCar (bar >= -120)

Ours is configured by ``configs/dqn_<env>.yaml`` (the file ``cli.py`` trains with), SB3 by the
same numbers (CartPole only; needs ``uv sync --group bench``). Both are evaluated by one function
(``evaluate_greedy``: 20 greedy episodes from the same start states) every ``steps_per_epoch`` env
steps, after that point's training, and the evaluation time is excluded from every timing.
Seeds are interleaved (ours, SB3, ours, ...) so that load from other processes hits both alike.
Reported: training wall-clock to the first evaluation >= 475, env steps per second of training,
the final greedy return, and the greedy return on unseen test episodes (seed + 2,000,000, as
``cli.py test`` plays) of the weights chosen by the best validation return (model selection).
"""

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning.pytorch as pl  # noqa: E402

from datamodules.experience import ExperienceDataModule, evaluate_greedy, make_vector_env  # noqa: E402
from modules.dqn import DQN  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BARS = {"cartpole": 500.0, "acrobot": -85.0, "mountaincar": -120.0}
THRESHOLD = 475.0


class Stopwatch:
    """Training time with evaluation time taken out; records (env steps, training seconds, mean return).

    Wall-clock is what the bars are about; CPU time of this process is kept beside it because other
    processes on a small shared machine can slow the wall-clock of either library at random.
    """

    def __init__(self) -> None:
        self.start = self.paused = self.cpu_start = self.cpu_paused = 0.0
        self.evaluation_seconds = self.evaluation_cpu_seconds = 0.0
        self.evaluations: list[tuple[int, float, float]] = []
        self.best_return, self.best_weights = -float("inf"), None

    def keep_if_best(self, q_network: torch.nn.Module, mean_return: float) -> None:
        """Model selection on the validation episodes: remember the weights of the best evaluation (latest on ties)."""
        if mean_return >= self.best_return:
            self.best_return, self.best_weights = mean_return, copy.deepcopy(q_network.state_dict())

    def begin(self) -> None:
        self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def pause(self) -> float:
        self.paused, self.cpu_paused = time.perf_counter(), time.process_time()
        return self.paused - self.start - self.evaluation_seconds

    def resume(self) -> None:
        self.evaluation_seconds += time.perf_counter() - self.paused
        self.evaluation_cpu_seconds += time.process_time() - self.cpu_paused

    def stop(self) -> None:
        self.total_seconds = time.perf_counter() - self.start - self.evaluation_seconds
        self.total_cpu_seconds = time.process_time() - self.cpu_start - self.evaluation_cpu_seconds

    def summary(self, total_steps: int, best_test_return: float) -> dict:
        first = next(((steps, seconds) for steps, seconds, ret in self.evaluations if ret >= THRESHOLD), (None, None))
        return {
            "steps_to_475": first[0],
            "seconds_to_475": first[1],
            "steps_per_second": total_steps / self.total_seconds,
            "steps_per_cpu_second": total_steps / self.total_cpu_seconds,
            "final_return": self.evaluations[-1][2],
            "best_val_return": self.best_return,
            "best_test_return": best_test_return,
            "curve": [round(ret, 1) for _, _, ret in self.evaluations],
        }


class LightningStopwatch(pl.Callback):
    def __init__(self, watch: Stopwatch) -> None:
        self.watch = watch

    def on_train_start(self, trainer, pl_module) -> None:
        self.watch.begin()

    def on_validation_start(self, trainer, pl_module) -> None:
        self.seconds = self.watch.pause()

    def on_validation_end(self, trainer, pl_module) -> None:
        steps, mean_return = trainer.datamodule.env_steps, float(trainer.callback_metrics["val/return"])
        self.watch.evaluations.append((steps, self.seconds, mean_return))
        self.watch.keep_if_best(pl_module.q_network, mean_return)
        self.watch.resume()

    def on_train_end(self, trainer, pl_module) -> None:
        self.watch.stop()


def load_config(env: str) -> tuple[dict, dict, int]:
    config = yaml.safe_load((CONFIGS / f"dqn_{env}.yaml").read_text())
    return config["model"].get("init_args", {}), config["data"].get("init_args", {}), config["trainer"]["max_epochs"]


def run_ours(env: str, seed: int, epochs: int | None) -> dict:
    model_args, data_args, max_epochs = load_config(env)
    max_epochs = epochs or max_epochs
    pl.seed_everything(seed, verbose=False)
    model = DQN(**model_args)
    data = ExperienceDataModule(**(data_args | {"seed": seed}))
    watch = Stopwatch()
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[LightningStopwatch(watch)],
    )
    trainer.fit(model, data)
    model.q_network.load_state_dict(watch.best_weights)
    return watch.summary(data.env_steps, test_return(model.q_network, data_args, seed))


def run_sb3(seed: int, epochs: int | None) -> dict:
    from stable_baselines3 import DQN as SB3DQN
    from stable_baselines3.common.callbacks import BaseCallback

    model_args, data_args, max_epochs = load_config("cartpole")
    every = data_args["steps_per_epoch"]
    total = every * (epochs or max_epochs)
    eval_envs = make_vector_env(data_args["env_id"], min(data_args["eval_num_envs"], data_args["eval_episodes"]))
    watch = Stopwatch()

    class Evaluate(BaseCallback):
        # at the start of a rollout the previous rollout's gradient steps are done, as in our epochs
        def _on_training_start(self) -> None:
            watch.begin()

        def _on_rollout_start(self) -> None:
            if self.num_timesteps > 0 and self.num_timesteps % every == 0:
                self.evaluate()

        def _on_step(self) -> bool:
            return True

        def _on_training_end(self) -> None:
            watch.stop()
            self.evaluate()

        def evaluate(self) -> None:
            seconds = watch.pause()
            # the same episodes our validation runs: evaluate_greedy from ExperienceDataModule's eval seed
            episodes = evaluate_greedy(self.model.q_net, eval_envs, data_args["eval_episodes"], seed=seed + 1_000_000)
            mean_return = float(episodes["episode_return"].mean())
            watch.evaluations.append((self.num_timesteps, seconds, mean_return))
            watch.keep_if_best(self.model.q_net, mean_return)
            watch.resume()

    model = SB3DQN(
        "MlpPolicy",
        data_args["env_id"],
        learning_rate=model_args["lr"],
        batch_size=data_args["batch_size"],
        buffer_size=data_args["buffer_size"],
        learning_starts=data_args["learning_starts"],
        gamma=model_args["gamma"],
        target_update_interval=model_args["target_update_interval"],
        train_freq=data_args["train_freq"],
        gradient_steps=data_args["gradient_steps"],
        exploration_fraction=data_args["exploration_steps"] / total,  # the same schedule as ours, in env steps
        exploration_final_eps=data_args["exploration_final_eps"],
        max_grad_norm=model_args["max_grad_norm"],
        policy_kwargs={"net_arch": list(model_args["hidden_sizes"])},
        seed=seed,
        device="cpu",
    )
    model.learn(total_timesteps=total, callback=Evaluate())
    model.q_net.load_state_dict(watch.best_weights)
    return watch.summary(total, test_return(model.q_net, data_args, seed))


def test_return(q_network: torch.nn.Module, data_args: dict, seed: int) -> float:
    """Mean greedy return on the test episodes (the seeds ``ExperienceDataModule.test_dataloader`` plays, unseen in validation)."""
    episodes = data_args["eval_episodes"]
    envs = make_vector_env(data_args["env_id"], min(data_args["eval_num_envs"], episodes))
    return float(evaluate_greedy(q_network, envs, episodes, seed=seed + 2_000_000)["episode_return"].mean())


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(results: dict[str, list[dict]], seeds: list[int]) -> str:
    lines = [f"{'library':8} {'seed':>4} {'s to 475':>9} {'steps to 475':>12} {'env steps/s':>11} {'steps/cpu-s':>11} {'final return':>12} {'best-val ckpt test':>18}  greedy return per evaluation"]
    for name, runs in results.items():
        for seed, r in zip(seeds, runs):
            lines.append(
                f"{name:8} {seed:>4} {fmt(r['seconds_to_475'], '9.1f')} {fmt(r['steps_to_475'], '12d')} {r['steps_per_second']:11.0f} {r['steps_per_cpu_second']:11.0f} "
                f"{r['final_return']:12.1f} {r['best_test_return']:18.1f}  {r['curve']}"
            )
    return "\n".join(lines)


def mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="8 evaluation periods instead of the config's max_epochs")
    parser.add_argument("--env", choices=sorted(BARS), default="cartpole")
    parser.add_argument("--no-sb3", action="store_true", help="only ours (always so for acrobot and mountaincar)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both libraries (1 is fastest for these small networks)")
    parser.add_argument(
        "--keep-nvml-check",
        action="store_true",
        help="keep PYTORCH_NVML_BASED_CUDA_CHECK=1, which importing Lightning sets; on a CPU-only host with a CUDA build "
        "of torch it makes every Adam step dlopen NVML (~0.5 ms here), for SB3 too once Lightning is imported",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.keep_nvml_check and not torch.cuda.is_available():
        # SB3 on its own never sets it, so this measures SB3 as its users run it and ours without the tax
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    epochs = 8 if args.quick else None
    with_sb3 = args.env == "cartpole" and not args.no_sb3

    results: dict[str, list[dict]] = {"ours": []} | ({"sb3": []} if with_sb3 else {})
    for seed in args.seeds:
        results["ours"].append(run_ours(args.env, seed, epochs))
        if with_sb3:
            results["sb3"].append(run_sb3(seed, epochs))

    print(f"\nDQN on {args.env}, seeds {args.seeds}, torch threads {args.threads}{', quick' if args.quick else ''}")
    print(table(results, args.seeds))
    ours = results["ours"]
    bar = BARS[args.env]
    solved = sum(r["final_return"] >= bar - 1e-6 for r in ours)
    print(f"\nours: final greedy return >= {bar:g} for {solved}/{len(ours)} seeds (mean {mean([r['final_return'] for r in ours]):.1f})")
    solved_best = sum(r["best_test_return"] >= bar - 1e-6 for r in ours)
    print(f"ours: checkpoint chosen by val/return, greedy return on unseen test episodes >= {bar:g} for {solved_best}/{len(ours)} seeds "
          f"(mean {mean([r['best_test_return'] for r in ours]):.1f})")
    if with_sb3:
        sb3 = results["sb3"]
        ours_t, sb3_t = mean([r["seconds_to_475"] for r in ours]), mean([r["seconds_to_475"] for r in sb3])
        ours_reached = sum(r["seconds_to_475"] is not None for r in ours)
        sb3_reached = sum(r["seconds_to_475"] is not None for r in sb3)
        ratio_t = ours_t / sb3_t if ours_t and sb3_t else None
        ratio_s = mean([r["steps_per_second"] for r in ours]) / mean([r["steps_per_second"] for r in sb3])
        print(
            f"time to 475 (mean over seeds that reached it): ours {fmt(ours_t, '.1f')} s ({ours_reached}/{len(ours)}), "
            f"SB3 {fmt(sb3_t, '.1f')} s ({sb3_reached}/{len(sb3)}); ratio {fmt(ratio_t, '.2f')} (bar <= 0.5)"
        )
        ratio_cpu = mean([r["steps_per_cpu_second"] for r in ours]) / mean([r["steps_per_cpu_second"] for r in sb3])
        print(f"env steps/s: ours / SB3 = {ratio_s:.2f} wall-clock (bar >= 2), {ratio_cpu:.2f} per CPU second")
        print(f"SB3: final greedy return 500 for {sum(r['final_return'] >= 500 for r in sb3)}/{len(sb3)} seeds; "
              f"best-on-val checkpoint on test episodes 500 for {sum(r['best_test_return'] >= 500 for r in sb3)}/{len(sb3)}")


if __name__ == "__main__":
    main()
