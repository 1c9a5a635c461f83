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
timings (the ``Stopwatch`` of ``benchmarks/rl_comparison.py``, shared with ``benchmarks/dqn_cartpole.py``). Seeds are interleaved (ours, SB3, ours, ...)
so that load from other processes hits both alike. A run stops at the first evaluation that reaches
the bar (``--run-to-end`` trains the config's whole budget).
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning.pytorch as pl  # noqa: E402

from benchmarks import rl_comparison as compare  # noqa: E402
from benchmarks.configs import load_config  # noqa: E402
from datamodules.environments import EnvironmentDataModule, evaluate_policy, make_vector_env  # noqa: E402
from datamodules.rollouts import RolloutDataModule  # noqa: E402
from modules.actor_critic import PolicyGradientAgent  # noqa: E402

# part: (config, bar on the greedy return, "reached" = an evaluation at or above the bar within the budget)
PARTS = {
    "sb3": ("pg_cartpole_a2c", 500.0),
    "a2c": ("pg_cartpole_a2c", 500.0),
    "reinforce": ("pg_cartpole_reinforce", 500.0),
    "acrobot": ("pg_acrobot_a2c", -90.0),
    "pendulum": ("pg_pendulum_a2c", -300.0),
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
    watch, count = compare.Stopwatch(), EpisodeCount()
    trainer = compare.lightning_trainer(max_epochs or epochs, [compare.LightningStopwatch(watch, network="policy"), count, StopAtBar(stop_at)])
    trainer.fit(model, data)
    return watch.summary(data.env_steps) | {"episodes_per_evaluation": count.episodes}


def run_sb3(seed: int, max_epochs: int | None, stop_at: float | None) -> dict:
    from stable_baselines3 import A2C
    from stable_baselines3.common.env_util import make_vec_env

    model_args, data_args, epochs = load_config("pg_cartpole_a2c")
    every = data_args["rollouts_per_epoch"] * data_args["n_steps"] * data_args["num_envs"]
    total = every * (max_epochs or epochs)
    eval_envs = make_vector_env(data_args["env_id"], min(data_args["eval_num_envs"], data_args["eval_episodes"]))
    watch = compare.Stopwatch()

    def mean_return(model) -> float:
        # the same episodes our validation plays: evaluate_policy from RolloutDataModule's eval seed
        act = lambda obs: model.predict(obs, deterministic=True)[0]  # noqa: E731
        episodes = evaluate_policy(act, eval_envs, data_args["eval_episodes"], seed=seed + EnvironmentDataModule.VAL_SEED_OFFSET)
        return float(episodes["episode_return"].mean())

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
    model.learn(total_timesteps=total, callback=compare.sb3_evaluations(watch, every, mean_return, network=lambda model: model.policy, stop_at=stop_at))
    return watch.summary(model.num_timesteps)


def first_reaching(result: dict, bar: float) -> int | None:
    """Index of the first evaluation whose greedy return reached ``bar``."""
    return next((i for i, (_, _, ret) in enumerate(result["evaluations"]) if ret >= bar - 1e-6), None)


def main() -> None:
    parser = compare.argument_parser(__doc__)
    parser.add_argument("--part", choices=sorted(PARTS), default="sb3")
    parser.add_argument("--max-epochs", type=int, default=None, help="evaluation periods (default: the config's max_epochs)")
    parser.add_argument("--run-to-end", action="store_true", help="train the whole budget instead of stopping at the bar")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    compare.measure_sb3_as_its_users_run_it()
    config, bar = PARTS[args.part]
    # the time-to-475 comparison stops both at 475; the bar parts stop at their bar
    stop_at = None if args.run_to_end else (compare.THRESHOLD if args.part == "sb3" else bar)

    with_sb3 = args.part == "sb3"
    results = compare.run_interleaved(
        args.seeds, lambda seed: run_ours(config, seed, args.max_epochs, stop_at), (lambda seed: run_sb3(seed, args.max_epochs, stop_at)) if with_sb3 else None
    )

    print(f"\n{args.part}: {config}, seeds {args.seeds}, torch threads {args.threads}")
    print(compare.table(results, args.seeds, episodes=args.part == "reinforce"))
    ours = results["ours"]
    if with_sb3:
        compare.print_sb3_comparison(ours, results["sb3"], time_bar=1)
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
