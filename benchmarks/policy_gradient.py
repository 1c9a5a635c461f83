"""gapbridge's policy-gradient agents against their result bars, and A2C side by side with Stable-Baselines3's A2C.

    python benchmarks/policy_gradient.py --part sb3          # A2C CartPole, ours vs SB3 (RL Zoo settings), 3 seeds
    python benchmarks/policy_gradient.py --part reinforce    # REINFORCE CartPole: greedy 500 within 500 episodes?
    python benchmarks/policy_gradient.py --part a2c          # A2C CartPole: greedy 500 within 500k env steps? (ours only)
    python benchmarks/policy_gradient.py --part acrobot      # A2C Acrobot-v1: final greedy return >= -90?
    python benchmarks/policy_gradient.py --part pendulum     # Gaussian A2C Pendulum-v1: final greedy return >= -300?
    python benchmarks/policy_gradient.py --part sb3 --seeds 0 --max-epochs 10   # a shorter run

Ours is configured by ``configs/pg_<setting>.yaml`` (the files ``cli.py`` trains with). SB3's A2C
gets the RL Zoo CartPole-v1 settings (``n_envs: 8``, ``ent_coef: 0.0``, SB3 defaults otherwise: 5-step
rollouts, RMSprop 7e-4, gamma 0.99, GAE lambda 1, value coef 0.5, grad norm 0.5, 64-64 tanh actor and
critic), which ``configs/pg_cartpole_a2c.yaml`` spells out. Both are evaluated by one function
(``evaluate_policy``: 20 greedy episodes from the same start states) every
``rollouts_per_epoch * n_steps * num_envs`` env steps, and evaluation time is excluded from the
timings (the ``Stopwatch`` of ``benchmarks/dqn_cartpole.py``). Seeds are interleaved (ours, SB3, ours, ...)
so that load from other processes hits both alike. A run stops at the first evaluation that reaches
the bar (``--run-to-end`` trains the config's whole budget).
"""

import argparse
import os
import sys
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import lightning.pytorch as pl  # noqa: E402
from dqn_cartpole import THRESHOLD, Stopwatch, fmt, mean  # noqa: E402

from datamodules.experience import evaluate_policy, make_vector_env  # noqa: E402
from datamodules.rollouts import RolloutDataModule  # noqa: E402
from modules.actor_critic import PolicyGradientAgent  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# part: (config, bar on the greedy return, "reached" = an evaluation at or above the bar within the budget)
PARTS = {
    "sb3": ("pg_cartpole_a2c", 500.0),
    "a2c": ("pg_cartpole_a2c", 500.0),
    "reinforce": ("pg_cartpole_reinforce", 500.0),
    "acrobot": ("pg_acrobot_a2c", -90.0),
    "pendulum": ("pg_pendulum_a2c", -300.0),
}


def load_config(name: str) -> tuple[dict, dict, int]:
    config = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    return config["model"].get("init_args", {}), config["data"].get("init_args", {}), config["trainer"]["max_epochs"]


class EvaluationClock(pl.Callback):
    """Drives the shared :class:`Stopwatch` from Lightning's hooks: evaluation time is taken out of training time."""

    def __init__(self, watch: Stopwatch) -> None:
        self.watch = watch

    def on_train_start(self, trainer, pl_module) -> None:
        self.watch.begin()

    def on_validation_start(self, trainer, pl_module) -> None:
        self.seconds = self.watch.pause()

    def on_validation_end(self, trainer, pl_module) -> None:
        steps, mean_return = trainer.datamodule.env_steps, float(trainer.callback_metrics["val/return"])
        self.watch.evaluations.append((steps, self.seconds, mean_return))
        print(f"  ours: {steps} env steps, {len(trainer.datamodule.episodes)} episodes, {self.seconds:.1f} s: greedy return {mean_return:.1f}", flush=True)
        self.watch.resume()

    def on_train_end(self, trainer, pl_module) -> None:
        self.watch.stop()


def summary(watch: Stopwatch, total_steps: int) -> dict:
    first = next(((steps, seconds) for steps, seconds, ret in watch.evaluations if ret >= THRESHOLD), (None, None))
    return {
        "steps_to_475": first[0],
        "seconds_to_475": first[1],
        "steps_per_second": total_steps / watch.total_seconds,
        "steps_per_cpu_second": total_steps / watch.total_cpu_seconds,
        "final_return": watch.evaluations[-1][2],
        "evaluations": watch.evaluations,
        "curve": [round(ret, 1) for _, _, ret in watch.evaluations],
    }


class StopAtBar(pl.Callback):
    """Ends training at the first evaluation whose mean greedy return reaches ``bar`` (``None``: never)."""

    def __init__(self, bar: float | None) -> None:
        self.bar = bar

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.bar is not None and float(trainer.callback_metrics["val/return"]) >= self.bar - 1e-6:
            trainer.should_stop = True


class EpisodeCount(pl.Callback):
    """Training episodes finished at each evaluation (REINFORCE's budget is counted in episodes)."""

    def __init__(self) -> None:
        self.episodes: list[int] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        self.episodes.append(len(trainer.datamodule.episodes))


def run_ours(config: str, seed: int, max_epochs: int | None, stop_at: float | None) -> dict:
    model_args, data_args, epochs = load_config(config)
    pl.seed_everything(seed, verbose=False)
    model = PolicyGradientAgent(**model_args)
    data = RolloutDataModule(**(data_args | {"seed": seed}))
    watch, count = Stopwatch(), EpisodeCount()
    trainer = pl.Trainer(
        max_epochs=max_epochs or epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[EvaluationClock(watch), count, StopAtBar(stop_at)],
    )
    trainer.fit(model, data)
    return summary(watch, data.env_steps) | {"episodes_per_evaluation": count.episodes}


def run_sb3(seed: int, max_epochs: int | None, stop_at: float | None) -> dict:
    from stable_baselines3 import A2C
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    model_args, data_args, epochs = load_config("pg_cartpole_a2c")
    every = data_args["rollouts_per_epoch"] * data_args["n_steps"] * data_args["num_envs"]
    total = every * (max_epochs or epochs)
    eval_envs = make_vector_env(data_args["env_id"], min(data_args["eval_num_envs"], data_args["eval_episodes"]))
    watch = Stopwatch()

    class Evaluate(BaseCallback):
        # at the start of a rollout the previous rollout's update is done, as at the end of our epochs
        def _on_training_start(self) -> None:
            watch.begin()
            self.stop = False

        def _on_rollout_start(self) -> None:
            if self.num_timesteps > 0 and self.num_timesteps % every == 0:
                self.evaluate()

        def _on_step(self) -> bool:
            return not self.stop

        def _on_training_end(self) -> None:
            watch.stop()
            if not watch.evaluations or watch.evaluations[-1][0] != self.num_timesteps:
                self.evaluate()

        def evaluate(self) -> None:
            seconds = watch.pause()
            # the same episodes our validation plays: evaluate_policy from RolloutDataModule's eval seed
            act = lambda obs: self.model.predict(obs, deterministic=True)[0]  # noqa: E731
            episodes = evaluate_policy(act, eval_envs, data_args["eval_episodes"], seed=seed + 1_000_000)
            mean_return = float(episodes["episode_return"].mean())
            watch.evaluations.append((self.num_timesteps, seconds, mean_return))
            self.stop = stop_at is not None and mean_return >= stop_at - 1e-6
            watch.resume()

    envs = make_vec_env(data_args["env_id"], n_envs=data_args["num_envs"], seed=seed)
    model = A2C(
        "MlpPolicy",
        envs,
        learning_rate=model_args["lr"],
        n_steps=data_args["n_steps"],
        gamma=model_args["gamma"],
        gae_lambda=model_args["gae_lambda"],
        ent_coef=model_args["entropy_coef"],
        vf_coef=model_args["value_coef"],
        max_grad_norm=model_args["max_grad_norm"],
        rms_prop_eps=model_args["optimizer_eps"],
        seed=seed,
        device="cpu",
    )
    model.learn(total_timesteps=total, callback=Evaluate())
    return summary(watch, model.num_timesteps)


def table(results: dict[str, list[dict]], seeds: list[int], episodes: bool) -> str:
    lines = [f"{'library':8} {'seed':>4} {'s to 475':>9} {'steps to 475':>12} {'env steps/s':>11} {'steps/cpu-s':>11} {'final return':>12}  greedy return per evaluation"]
    for name, runs in results.items():
        for seed, r in zip(seeds, runs):
            lines.append(
                f"{name:8} {seed:>4} {fmt(r['seconds_to_475'], '9.1f')} {fmt(r['steps_to_475'], '12d')} {r['steps_per_second']:11.0f} "
                f"{r['steps_per_cpu_second']:11.0f} {r['final_return']:12.1f}  {r['curve']}"
            )
            if episodes and "episodes_per_evaluation" in r:
                lines.append(f"{'':8} {'':>4} training episodes at each evaluation: {r['episodes_per_evaluation']}")
    return "\n".join(lines)


def first_reaching(result: dict, bar: float) -> int | None:
    """Index of the first evaluation whose greedy return reached ``bar``."""
    return next((i for i, (_, _, ret) in enumerate(result["evaluations"]) if ret >= bar - 1e-6), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=sorted(PARTS), default="sb3")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-epochs", type=int, default=None, help="evaluation periods (default: the config's max_epochs)")
    parser.add_argument("--run-to-end", action="store_true", help="train the whole budget instead of stopping at the bar")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both libraries (1 is fastest for these small networks)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not torch.cuda.is_available():
        # importing Lightning sets it; on a CPU-only host with a CUDA build of torch every optimiser step
        # then dlopens NVML. SB3 on its own never sets it: this measures SB3 as its users run it.
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    config, bar = PARTS[args.part]
    # the time-to-475 comparison stops both at 475; the bar parts stop at their bar
    stop_at = None if args.run_to_end else (THRESHOLD if args.part == "sb3" else bar)

    results: dict[str, list[dict]] = {"ours": []} | ({"sb3": []} if args.part == "sb3" else {})
    for seed in args.seeds:
        results["ours"].append(run_ours(config, seed, args.max_epochs, stop_at))
        if args.part == "sb3":
            results["sb3"].append(run_sb3(seed, args.max_epochs, stop_at))

    print(f"\n{args.part}: {config}, seeds {args.seeds}, torch threads {args.threads}")
    print(table(results, args.seeds, episodes=args.part == "reinforce"))
    ours = results["ours"]
    if args.part == "sb3":
        sb3 = results["sb3"]
        ours_t, sb3_t = mean([r["seconds_to_475"] for r in ours]), mean([r["seconds_to_475"] for r in sb3])
        reached = [sum(r["seconds_to_475"] is not None for r in runs) for runs in (ours, sb3)]
        ratio = ours_t / sb3_t if ours_t and sb3_t else None
        print(
            f"wall-clock to greedy 475 (mean over seeds that reached it): ours {fmt(ours_t, '.1f')} s ({reached[0]}/{len(ours)}), "
            f"SB3 {fmt(sb3_t, '.1f')} s ({reached[1]}/{len(sb3)}); ratio {fmt(ratio, '.2f')} (bar <= 1)"
        )
        ratio_s = mean([r["steps_per_second"] for r in ours]) / mean([r["steps_per_second"] for r in sb3])
        ratio_cpu = mean([r["steps_per_cpu_second"] for r in ours]) / mean([r["steps_per_cpu_second"] for r in sb3])
        print(f"env steps/s: ours / SB3 = {ratio_s:.2f} wall-clock, {ratio_cpu:.2f} per CPU second")
        return
    hits = [first_reaching(r, bar) for r in ours]
    if args.part == "reinforce":
        budget = [r["episodes_per_evaluation"][i] if i is not None else None for r, i in zip(ours, hits)]
        ok = sum(b is not None and b <= 500 for b in budget)
        print(f"\ntraining episodes before the first greedy evaluation >= {bar:g}: {budget}; within 500 episodes for {ok}/{len(ours)} seeds")
    elif args.part == "a2c":
        steps = [r["evaluations"][i][0] if i is not None else None for r, i in zip(ours, hits)]
        ok = sum(s is not None and s <= 500_000 for s in steps)
        print(f"\nenv steps before the first greedy evaluation >= {bar:g}: {steps}; within 500k env steps for {ok}/{len(ours)} seeds")
    else:
        finals = [r["final_return"] for r in ours]
        best = [max(ret for _, _, ret in r["evaluations"]) for r in ours]
        print(f"\nfinal greedy return {[round(f, 1) for f in finals]} (best evaluation {[round(b, 1) for b in best]}); "
              f">= {bar:g} at the end for {sum(f >= bar for f in finals)}/{len(ours)} seeds")


if __name__ == "__main__":
    main()
