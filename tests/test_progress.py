"""The progress display: final counts always drawn, ETA, cache hits, cost, warnings held back, the live snapshot."""

from __future__ import annotations

import io
import json
import logging
import time
import warnings

from rich.console import Console

from trace_builder.config import RunConfig
from trace_builder.run.progress import (
    SNAPSHOT,
    PipelineProgress,
    format_duration,
    remaining_seconds,
    status_lines,
)


class FakeClient:
    """Usage per stage as LLMClient.usage_for gives it (all of a stage's usage from one task, `<stage>.answer`)."""

    def __init__(self):
        self.counts = {}

    def usage_for(self, stage):
        return {
            "requests": 0,
            "cache_hits": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            **self.counts.get(stage, {}),
        }

    def usage_by_task(self, stage):
        return {f"{stage}.answer": self.usage_for(stage)}


def priced(input_per_million: float, output_per_million: float, **roles) -> RunConfig:
    prices = {"input_per_million": input_per_million, "output_per_million": output_per_million}
    return RunConfig.model_validate({"prices": prices, "roles": roles})


def screen(terminal: bool = False) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200, force_terminal=terminal, color_system=None), out


def task_of(display: PipelineProgress, name: str):
    return next(t for t in display._progress.tasks if t.description == name)


def test_durations_and_remaining_time():
    assert [format_duration(s) for s in (None, 5, 75, 3725)] == ["-", "5s", "1m 15s", "1h 02m"]
    assert remaining_seconds(done=10, done_at_start=0, total=30, elapsed=5.0) == 10.0
    assert remaining_seconds(done=5, done_at_start=5, total=30, elapsed=5.0) is None  # no row yet this session
    assert remaining_seconds(done=30, done_at_start=0, total=30, elapsed=1.0) == 0.0


def test_every_bar_shows_its_last_row_even_inside_the_throttle():
    console, _ = screen()
    with PipelineProgress(console, None) as display:
        taxonomy, expand = display.stage("taxonomy", 5), display.stage("expand", 5)
        for _ in range(5):  # all within one throttle window
            taxonomy.row_done({"status": "ok"})
        assert task_of(display, "taxonomy").completed == 5  # the last row is drawn at once
        expand.row_done({"status": "ok"})
        expand.row_done({"status": "failed", "failed_stage": "expand"})
    assert task_of(display, "expand").completed == 2  # and every bar once more at the end
    assert task_of(display, "expand").fields["failed"] == 1


def test_bars_show_cache_hits_tokens_cost_and_eta(tmp_path):
    console, out = screen()
    client = FakeClient()
    with PipelineProgress(console, client, run_dir=tmp_path, config=priced(1.0, 4.0)) as display:
        bar = display.stage("respond", 4)
        client.counts["respond"] = {
            "requests": 10,
            "cache_hits": 3,
            "prompt_tokens": 1_000_000,
            "completion_tokens": 500_000,
        }
        time.sleep(0.01)
        bar.row_done({"status": "ok"})
        bar.refresh(force=True)
        fields = task_of(display, "respond").fields
        assert fields["cached"] == "3"
        assert fields["tokens"] == "1.5M"
        assert fields["cost"] == "$3.00"
        assert fields["eta"] != "-"
        run = task_of(display, "run").fields
        assert run["cost"] == "$3.00"
    text = out.getvalue()
    assert " hit" in text and "ETA" in text and "$3.00" in text
    snapshot = json.loads((tmp_path / SNAPSHOT).read_text())
    assert snapshot["stages"]["respond"]["done"] == 1 and snapshot["run"]["cost_usd"] == 3.0


def test_warnings_are_held_until_the_display_ends():
    console, out = screen(terminal=True)
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # not once per place: the display counts repeats
        with PipelineProgress(console, None) as display:
            display.stage("expand", 1)
            for _ in range(3):
                warnings.warn("old API", FutureWarning, stacklevel=1)
            during = out.getvalue()
        assert warnings.showwarning != display._hold_warning  # restored
    assert "old API" not in during
    assert "FutureWarning (3 times): old API" in out.getvalue()


def test_status_lines_add_the_live_snapshot_to_finished_stages(tmp_path):
    snapshot = {
        "updated": time.time(),
        "stages": {"expand": {"done": 3, "total": 9, "eta_s": 65, "prompt_tokens": 100, "completion_tokens": 10}},
        "run": {"eta_s": 130},
    }
    (tmp_path / SNAPSHOT).write_text(json.dumps(snapshot))
    snapshot["stages"]["expand"]["cost_usd"] = 0.11  # this session's, priced live
    (tmp_path / SNAPSHOT).write_text(json.dumps(snapshot))
    earlier = {"expand.rewrite": {"prompt_tokens": 600, "completion_tokens": 60}}  # an earlier session's
    earlier["expand.structure"] = {"prompt_tokens": 400, "completion_tokens": 40}
    stages = {"seeds": ("done", {}), "taxonomy": ("done", {}), "expand": ("running", earlier)}
    # The rewriter (expand.rewrite and .structure) at its own price, twice the generator's.
    lines = status_lines(tmp_path, stages, priced(1000.0, 1000.0, rewriter={"prices": {"input_per_million": 2000.0}}))
    assert lines[0] == "tokens so far: 1,100 prompt + 110 completion, cost $2.21"
    assert "expand 3/9 ETA 1m 05s" in lines[1] and "run ETA 2m 10s" in lines[1]
    finished = {name: ("done", usage) for name, (_, usage) in stages.items()}
    assert len(status_lines(tmp_path, finished, RunConfig())) == 1  # no live line once done, no cost unpriced


def test_library_log_records_are_held_until_the_display_ends():
    console, out = screen(terminal=True)
    stream = io.StringIO()
    library = logging.getLogger("some_library")
    handler = logging.StreamHandler(stream)  # holds its stream: rich cannot redirect it
    library.addHandler(handler)
    try:
        with PipelineProgress(console, None) as display:
            display.stage("expand", 1)
            library.warning("deprecated thing")
        library.warning("after")
    finally:
        library.removeHandler(handler)
    assert stream.getvalue() == "after\n"
    assert "warning: deprecated thing" in out.getvalue()


def test_a_plan_for_the_same_settings_stretches_the_run_eta(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"settings": "target 100"}))
    (tmp_path / "plan").mkdir()
    (tmp_path / "plan" / "plan.json").write_text(json.dumps({"settings": "target 100", "requests": 1000}))
    client = FakeClient()
    console, _ = screen()
    with PipelineProgress(console, client, run_dir=tmp_path) as display:
        bar = display.stage("expand", 2)
        client.counts["expand"] = {"requests": 100}
        time.sleep(0.05)
        bar.row_done({"status": "ok"})
        stage_eta = bar.figures()["eta_s"]
        run_eta = display.run_figures()["eta_s"]
    # 100 of 1000 planned requests answered: nine times as long again, not the bar's one row left.
    assert run_eta > 5 * stage_eta
    (tmp_path / "plan" / "plan.json").write_text(json.dumps({"settings": "other", "requests": 1000}))
    assert PipelineProgress(console, client, run_dir=tmp_path)._planned is None
