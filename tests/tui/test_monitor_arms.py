"""The Monitor with arms that train a model of their own (scratch, tapt): their events carry
``arm`` and stay out of the fine-tune's curves; the tapt arm's masked-LM loss is a curve of its
own (on the loss chart's right axis)."""

from __future__ import annotations

import time

from bertui.tui.widgets.chart import Chart

from .conftest import build_app, plain, wait_until
from .test_monitor import emit, live_run


async def test_the_mlm_loss_is_a_curve_and_other_arms_stay_out_of_the_fine_tune(
        bertui_home, config_path):
    run = live_run(bertui_home)
    emit(run, "run_start", 0, total_steps=20, epochs=1.0, n_train=320, n_eval=100)
    for step in range(1, 21):
        emit(run, "train", step, loss=0.7 - 0.01 * step, epoch=step / 20)
    emit(run, "eval", 20, epoch=1.0, eval_loss=0.4, accuracy=0.81, macro_f1=0.8)
    emit(run, "phase", 0, name="scratch")
    emit(run, "train", 10, loss=0.69, epoch=0.5, arm="scratch")
    emit(run, "eval", 20, epoch=1.0, eval_loss=0.69, accuracy=0.52, macro_f1=0.5, arm="scratch")
    emit(run, "phase", 0, name="tapt")
    for step in range(1, 31):
        emit(run, "mlm", step, loss=11.0 - 0.2 * step, epoch=step / 10, arm="tapt")
    emit(run, "progress", 30, total_steps=30, epoch=3.0, samples_per_s=55.5, arm="tapt")
    app = build_app(bertui_home, config_path, show_run=run.id, clock=time.time)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: len(screen.follower.history.mlm_loss) == 30)
        history = screen.follower.history
        assert len(history.train_loss) == 20 and history.step == 20  # the fine-tune's
        assert [e["accuracy"] for e in history.evals] == [0.81]
        assert history.arm_evals["scratch"][0]["accuracy"] == 0.52
        assert history.training_arm is None  # no training phase of an arm yet
        await wait_until(pilot, lambda: "55.5" in plain(screen.query_one("#run-throughput")))
        assert "81.0%" in plain(screen.query_one("#run-scores"))  # the fine-tune's accuracy
        chart = screen.query_one("#loss-chart", Chart)
        await wait_until(pilot, lambda: chart.draws >= 1)
        await wait_until(pilot, lambda: "TAPT MLM" in chart.render().plain)
        rendered = chart.render().plain
        assert "11" in rendered or "10.8" in rendered  # the right axis holds the MLM range
