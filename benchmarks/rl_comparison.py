"""What the RL benchmarks share: gapbridge and Stable-Baselines3 timed alike, evaluated alike, printed side by side.

A :class:`Stopwatch` takes evaluation time out of training time and records every evaluation as
(env steps, training seconds, mean greedy return), keeping the weights of the best one (model
selection on the validation episodes). :class:`LightningStopwatch` drives it from Lightning's hooks,
:func:`sb3_evaluations` from an SB3 callback at the same env steps. :func:`run_interleaved` runs the
seeds (ours, SB3, ours, ...) so that load from other processes hits both alike; :func:`table` and
:func:`print_sb3_comparison` print the runs. Used by ``benchmarks/dqn_cartpole.py`` and
``benchmarks/policy_gradient.py``.
"""

import argparse
import copy
import os
import time
from typing import Callable

import lightning.pytorch as pl
import torch

THRESHOLD = 475.0  # CartPole's "solved" return: the time-to-threshold column


def argument_parser(description: str) -> argparse.ArgumentParser:
    """The options every RL benchmark has: ``--seeds`` and ``--threads``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both libraries (1 is fastest for these small networks)")
    return parser


def measure_sb3_as_its_users_run_it() -> None:
    """Undo ``PYTORCH_NVML_BASED_CUDA_CHECK=1``, which importing Lightning sets.

    On a CPU-only host with a CUDA build of torch it makes every optimiser step dlopen NVML (~0.5 ms),
    for SB3 too once Lightning is imported; SB3 on its own never sets it.
    """
    if not torch.cuda.is_available():
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)


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

    def begin(self) -> None:
        self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def pause(self) -> float:
        """Stop the training clock for an evaluation; returns the training seconds so far."""
        self.paused, self.cpu_paused = time.perf_counter(), time.process_time()
        return self.paused - self.start - self.evaluation_seconds

    def resume(self) -> None:
        self.evaluation_seconds += time.perf_counter() - self.paused
        self.evaluation_cpu_seconds += time.process_time() - self.cpu_paused

    def stop(self) -> None:
        self.total_seconds = time.perf_counter() - self.start - self.evaluation_seconds
        self.total_cpu_seconds = time.process_time() - self.cpu_start - self.evaluation_cpu_seconds

    def record(self, env_steps: int, seconds: float, mean_return: float, network: torch.nn.Module) -> None:
        """One evaluation; the acting network's weights are kept if it is the best so far (latest on ties)."""
        self.evaluations.append((env_steps, seconds, mean_return))
        if mean_return >= self.best_return:
            self.best_return, self.best_weights = mean_return, copy.deepcopy(network.state_dict())

    def summary(self, total_steps: int) -> dict:
        first = next(((steps, seconds) for steps, seconds, ret in self.evaluations if ret >= THRESHOLD), (None, None))
        return {
            "steps_to_475": first[0],
            "seconds_to_475": first[1],
            "steps_per_second": total_steps / self.total_seconds,
            "steps_per_cpu_second": total_steps / self.total_cpu_seconds,
            "final_return": self.evaluations[-1][2],
            "best_val_return": self.best_return,
            "evaluations": self.evaluations,
            "curve": [round(ret, 1) for _, _, ret in self.evaluations],
        }


class LightningStopwatch(pl.Callback):
    """Drives a :class:`Stopwatch` from Lightning's hooks: each validation is an evaluation, taken out of training time.

    Args:
        watch: the stopwatch.
        network: attribute of the LightningModule that acts (``q_network``, ``policy``): its weights are kept.
    """

    def __init__(self, watch: Stopwatch, network: str) -> None:
        self.watch, self.network = watch, network

    def on_train_start(self, trainer, pl_module) -> None:
        self.watch.begin()

    def on_validation_start(self, trainer, pl_module) -> None:
        self.seconds = self.watch.pause()

    def on_validation_end(self, trainer, pl_module) -> None:
        steps, mean_return = trainer.datamodule.env_steps, float(trainer.callback_metrics["val/return"])
        self.watch.record(steps, self.seconds, mean_return, getattr(pl_module, self.network))
        print(f"  ours: {steps} env steps, {len(trainer.datamodule.episodes)} episodes, {self.seconds:.1f} s: greedy return {mean_return:.1f}", flush=True)
        self.watch.resume()

    def on_train_end(self, trainer, pl_module) -> None:
        self.watch.stop()


def lightning_trainer(max_epochs: int, callbacks: list[pl.Callback]) -> pl.Trainer:
    """How ours is timed: one CPU process, validation every epoch, nothing written, no progress bar, no sanity check."""
    return pl.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=callbacks)


def sb3_evaluations(watch: Stopwatch, every: int, mean_return: Callable, network: Callable, stop_at: float | None = None):
    """An SB3 callback that evaluates every ``every`` env steps and at the end, as our validation does.

    At the start of a rollout the previous rollout's updates are done, as at the end of our epochs.
    ``mean_return(model)`` plays the evaluation episodes, ``network(model)`` is the acting network
    whose best weights are kept; training stops at the first evaluation reaching ``stop_at``.
    """
    from stable_baselines3.common.callbacks import BaseCallback

    class Evaluate(BaseCallback):
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
            result = mean_return(self.model)
            watch.record(self.num_timesteps, seconds, result, network(self.model))
            self.stop = stop_at is not None and result >= stop_at - 1e-6
            watch.resume()

    return Evaluate()


def run_interleaved(seeds: list[int], ours: Callable[[int], dict], sb3: Callable[[int], dict] | None = None) -> dict[str, list[dict]]:
    """``{"ours": [summary per seed], "sb3": [...]}``, the libraries taking turns seed by seed (no ``sb3``: ours only)."""
    results: dict[str, list[dict]] = {"ours": []} | ({"sb3": []} if sb3 is not None else {})
    for seed in seeds:
        results["ours"].append(ours(seed))
        if sb3 is not None:
            results["sb3"].append(sb3(seed))
    return results


def print_sb3_comparison(ours: list[dict], sb3: list[dict], time_bar: float, speed_bar: float | None = None) -> None:
    """Wall-clock to the threshold (mean over the seeds that reached it) and env steps per second, ours / SB3, against the bars."""
    ours_t, sb3_t = mean([r["seconds_to_475"] for r in ours]), mean([r["seconds_to_475"] for r in sb3])
    reached = [sum(r["seconds_to_475"] is not None for r in runs) for runs in (ours, sb3)]
    ratio = ours_t / sb3_t if ours_t and sb3_t else None
    print(
        f"wall-clock to greedy {THRESHOLD:g} (mean over seeds that reached it): ours {fmt(ours_t, '.1f')} s ({reached[0]}/{len(ours)}), "
        f"SB3 {fmt(sb3_t, '.1f')} s ({reached[1]}/{len(sb3)}); ratio {fmt(ratio, '.2f')} (bar <= {time_bar:g})"
    )
    ratio_s = mean([r["steps_per_second"] for r in ours]) / mean([r["steps_per_second"] for r in sb3])
    ratio_cpu = mean([r["steps_per_cpu_second"] for r in ours]) / mean([r["steps_per_cpu_second"] for r in sb3])
    bar = f" (bar >= {speed_bar:g})" if speed_bar is not None else ""
    print(f"env steps/s: ours / SB3 = {ratio_s:.2f} wall-clock{bar}, {ratio_cpu:.2f} per CPU second")


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def table(results: dict[str, list[dict]], seeds: list[int], episodes: bool = False) -> str:
    """One row per library and seed; the best-on-validation test return where runs have one, training episodes if asked."""
    test_column = any("best_test_return" in r for runs in results.values() for r in runs)
    lines = [
        f"{'library':8} {'seed':>4} {'s to 475':>9} {'steps to 475':>12} {'env steps/s':>11} {'steps/cpu-s':>11} {'final return':>12}"
        + (f" {'best-val ckpt test':>18}" if test_column else "")
        + "  greedy return per evaluation"
    ]
    for name, runs in results.items():
        for seed, r in zip(seeds, runs):
            lines.append(
                f"{name:8} {seed:>4} {fmt(r['seconds_to_475'], '9.1f')} {fmt(r['steps_to_475'], '12d')} {r['steps_per_second']:11.0f} "
                f"{r['steps_per_cpu_second']:11.0f} {r['final_return']:12.1f}"
                + (f" {fmt(r.get('best_test_return'), '18.1f')}" if test_column else "")
                + f"  {r['curve']}"
            )
            if episodes and "episodes_per_evaluation" in r:
                lines.append(f"{'':8} {'':>4} training episodes at each evaluation: {r['episodes_per_evaluation']}")
    return "\n".join(lines)
