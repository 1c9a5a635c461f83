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

import statistics
import sys
import time
from pathlib import Path

import gymnasium as gym
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning.pytorch as pl  # noqa: E402

from benchmarks import rl_comparison as compare  # noqa: E402
from benchmarks.configs import load_config  # noqa: E402
from datamodules.environments import EnvironmentDataModule, make_vector_env  # noqa: E402
from datamodules.experience import ExperienceDataModule, evaluate_greedy  # noqa: E402
from modules.dqn import DQN  # noqa: E402

BARS = {"cartpole": 500.0, "acrobot": -85.0, "mountaincar": -120.0}


def run_ours(env: str, seed: int, epochs: int | None) -> dict:
    model_args, data_args, max_epochs = load_config(f"dqn_{env}")
    max_epochs = epochs or max_epochs
    pl.seed_everything(seed, verbose=False)
    model = DQN(**model_args)
    data = ExperienceDataModule(**(data_args | {"seed": seed}))
    watch = compare.Stopwatch()
    trainer = compare.lightning_trainer(max_epochs, [compare.LightningStopwatch(watch, network="q_network")])
    trainer.fit(model, data)
    model.q_network.load_state_dict(watch.best_weights)
    return watch.summary(data.env_steps) | {"best_test_return": test_return(model.q_network, data_args, seed)}


def run_sb3(seed: int, epochs: int | None) -> dict:
    from stable_baselines3 import DQN as SB3DQN

    model_args, data_args, max_epochs = load_config("dqn_cartpole")
    every = data_args["steps_per_epoch"]
    total = every * (epochs or max_epochs)
    eval_envs = make_vector_env(data_args["env_id"], min(data_args["eval_num_envs"], data_args["eval_episodes"]))
    watch = compare.Stopwatch()

    def mean_return(model) -> float:
        # the same episodes our validation runs: evaluate_greedy from ExperienceDataModule's eval seed
        episodes = evaluate_greedy(model.q_net, eval_envs, data_args["eval_episodes"], seed=seed + EnvironmentDataModule.VAL_SEED_OFFSET)
        return float(episodes["episode_return"].mean())

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
    model.learn(total_timesteps=total, callback=compare.sb3_evaluations(watch, every, mean_return, network=lambda model: model.q_net))
    model.q_net.load_state_dict(watch.best_weights)
    return watch.summary(total) | {"best_test_return": test_return(model.q_net, data_args, seed)}


def throughput_floor(cycles: int = 10) -> tuple[float, float]:
    """Env steps per second that any DQN doing the config's work can reach: ``(updates alone, updates + acting)``.

    A bare PyTorch loop does exactly the gradient updates of one collection cycle (one batched target, then
    ``gradient_steps`` minibatches through :meth:`DQN.minibatch_loss`, backward, gradient clipping and our
    Adam step) on random CartPole-shaped data, with no environment, replay, Lightning or logging; a second
    loop steps one CartPole env ``train_freq`` times, acting greedily with the Q-network (one forward per
    step, as a DQN must once exploration has decayed). Each is the median of ``cycles`` cycles, and
    ``train_freq`` env steps over those seconds is the bound.
    """
    model_args, data_args, _ = load_config("dqn_cartpole")
    model = DQN(**model_args, observation_shape=(4,), num_actions=2)
    optimizer = model.configure_optimizers()
    steps, batch, train_freq = data_args["gradient_steps"], data_args["batch_size"], data_args["train_freq"]
    obs, next_obs = torch.randn(2, steps * batch, 4)
    action = torch.randint(2, (steps, batch))
    rewards, terminated, bootstrap = torch.ones(steps * batch, 1), torch.zeros(steps * batch, dtype=torch.bool), torch.ones(steps * batch)
    env = gym.make(data_args["env_id"])
    obs_t, _ = env.reset(seed=0)
    update_times, env_times = [], []
    for _ in range(cycles):
        start = time.perf_counter()
        with torch.no_grad():
            td_targets = model.td_target(rewards, next_obs, terminated, bootstrap).view(steps, batch)
        for g, minibatch in enumerate(obs.view(steps, batch, 4)):
            loss = model.minibatch_loss(minibatch, action[g], td_targets[g])[0]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.q_network.parameters(), model_args["max_grad_norm"])
            optimizer.step()
        update_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        with torch.no_grad():
            for _ in range(train_freq):
                obs_t, _, terminated_t, truncated_t, _ = env.step(int(model.q_network(torch.as_tensor(obs_t)[None]).argmax()))
                if terminated_t or truncated_t:
                    obs_t, _ = env.reset()
        env_times.append(time.perf_counter() - start)
    updates, stepping = statistics.median(update_times), statistics.median(env_times)
    return train_freq / updates, train_freq / (updates + stepping)


def test_return(q_network: torch.nn.Module, data_args: dict, seed: int) -> float:
    """Mean greedy return on the test episodes (the seeds ``ExperienceDataModule.test_dataloader`` plays, unseen in validation)."""
    episodes = data_args["eval_episodes"]
    envs = make_vector_env(data_args["env_id"], min(data_args["eval_num_envs"], episodes))
    return float(evaluate_greedy(q_network, envs, episodes, seed=seed + EnvironmentDataModule.TEST_SEED_OFFSET)["episode_return"].mean())


def main() -> None:
    parser = compare.argument_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="8 evaluation periods instead of the config's max_epochs")
    parser.add_argument("--env", choices=sorted(BARS), default="cartpole")
    parser.add_argument("--no-sb3", action="store_true", help="only ours (always so for acrobot and mountaincar)")
    parser.add_argument(
        "--keep-nvml-check",
        action="store_true",
        help="keep PYTORCH_NVML_BASED_CUDA_CHECK=1, which importing Lightning sets; on a CPU-only host with a CUDA build "
        "of torch it makes every Adam step dlopen NVML (~0.5 ms here), for SB3 too once Lightning is imported",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.keep_nvml_check:
        compare.measure_sb3_as_its_users_run_it()  # and ours without the tax
    epochs = 8 if args.quick else None
    with_sb3 = args.env == "cartpole" and not args.no_sb3

    results = compare.run_interleaved(args.seeds, lambda seed: run_ours(args.env, seed, epochs), (lambda seed: run_sb3(seed, epochs)) if with_sb3 else None)

    print(f"\nDQN on {args.env}, seeds {args.seeds}, torch threads {args.threads}{', quick' if args.quick else ''}")
    print(compare.table(results, args.seeds))
    ours = results["ours"]
    bar = BARS[args.env]
    solved = sum(r["final_return"] >= bar - 1e-6 for r in ours)
    print(f"\nours: final greedy return >= {bar:g} for {solved}/{len(ours)} seeds (mean {compare.mean([r['final_return'] for r in ours]):.1f})")
    solved_best = sum(r["best_test_return"] >= bar - 1e-6 for r in ours)
    print(f"ours: checkpoint chosen by val/return, greedy return on unseen test episodes >= {bar:g} for {solved_best}/{len(ours)} seeds "
          f"(mean {compare.mean([r['best_test_return'] for r in ours]):.1f})")
    if with_sb3:
        sb3 = results["sb3"]
        compare.print_sb3_comparison(ours, sb3, time_bar=0.5, speed_bar=2)
        updates_only, with_env = throughput_floor()
        sb3_speed, our_speed = (compare.mean([r["steps_per_second"] for r in runs]) for runs in (sb3, ours))
        print(f"floor of the config's work in bare PyTorch: its gradient updates alone allow {updates_only:.0f} env steps/s "
              f"({updates_only / sb3_speed:.2f}x SB3's mean), updates plus acting in CartPole {with_env:.0f} ({with_env / sb3_speed:.2f}x); "
              f"ours ran at {our_speed / with_env:.0%} of the latter")
        print(f"SB3: final greedy return 500 for {sum(r['final_return'] >= 500 for r in sb3)}/{len(sb3)} seeds; "
              f"best-on-val checkpoint on test episodes 500 for {sum(r['best_test_return'] >= 500 for r in sb3)}/{len(sb3)}")


if __name__ == "__main__":
    main()
