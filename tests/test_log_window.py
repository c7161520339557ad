"""flaxlm/run/log_window.py: what a logged line's training metrics mean."""

from flaxlm.run.log_window import LogWindow


def test_sampled_metrics_are_window_means_and_state_is_the_step_s_own():
    window = LogWindow()
    window.add({"loss": 2.0, "grad_norm": 1.0, "learning_rate": 1e-4, "skipped": 0})
    window.add({"loss": 4.0, "grad_norm": 3.0, "learning_rate": 2e-4, "skipped": 0})
    # The logged step was skipped (non-finite): it was not added, and its NaN stays out.
    logged = window.means({
        "loss": float("nan"),
        "grad_norm": float("nan"),
        "learning_rate": 2e-4,
        "skipped": 1
    })
    assert logged == {
        "loss": 3.0,
        "grad_norm": 2.0,
        "learning_rate": 2e-4,
        "skipped": 1,
        "log_window_steps": 2
    }


def test_a_window_of_skipped_steps_logs_the_step_as_it_is():
    assert LogWindow().means({
        "loss": 1.5,
        "skipped": 3
    }) == {
        "loss": 1.5,
        "skipped": 3,
        "log_window_steps": 0
    }


def test_a_saved_window_continues_where_it_stopped():
    window = LogWindow()
    window.add({"loss": 1.0})
    resumed = LogWindow(window.state())
    resumed.add({"loss": 3.0})
    assert resumed.means({"loss": 3.0})["loss"] == 2.0
    resumed.reset()
    assert resumed.state() == {"steps": 0, "sums": {}}
