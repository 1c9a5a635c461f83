"""The return curve: training returns, their moving average and the greedy evaluations, against env steps."""

import matplotlib.pyplot as plt

from callbacks.return_curve import ReturnCurve


def test_curve_draws_training_returns_their_moving_average_and_the_evaluations():
    curve = ReturnCurve(smoothing=2)
    curve.evaluations = [(10, 5.0), (20, 7.0)]
    figure = curve.figure([(3, 1.0, 3), (6, 3.0, 3), (9, 8.0, 3)])  # (env steps at the end, return, length)
    ax = figure.axes[0]
    training, smoothed, evaluations = ax.get_lines()
    assert [line.get_label() for line in ax.get_lines()] == ["training episodes", "training (mean of 2)", "greedy evaluation"]
    assert list(training.get_xdata()) == [3, 6, 9] and list(training.get_ydata()) == [1.0, 3.0, 8.0]
    assert list(smoothed.get_ydata()) == [1.0, 2.0, 5.5]  # the first point averages what there is
    assert list(evaluations.get_xdata()) == [10, 20] and list(evaluations.get_ydata()) == [5.0, 7.0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("env steps", "episode return")
    plt.close(figure)


def test_curve_state_survives_a_checkpoint():
    curve = ReturnCurve()
    curve.evaluations, curve._episodes_logged = [(10, 5.0)], 4
    restored = ReturnCurve()
    restored.load_state_dict(curve.state_dict())
    assert restored.evaluations == [(10, 5.0)] and restored._episodes_logged == 4
