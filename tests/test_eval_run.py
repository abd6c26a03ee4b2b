"""End-to-end eval against the scripted server: known judgements give known metrics; resume; compare; CLI."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from tests.test_eval_support import known_rows, scripted, scripted_config, write_jsonl
from trace_builder.errors import UserError
from trace_builder.evaluate.cli import eval_app
from trace_builder.evaluate.runner import check_resumable, evaluate_path
from trace_builder.judge import judge_response
from trace_builder.llm.cache import RequestCache
from trace_builder.run.store import StageStore, manifest_path
from trace_builder.testing.devserver import ScriptedServer


@pytest.fixture
def servers():
    """The model under test and the judge, each on its own scripted server."""
    with ScriptedServer(scripted) as model, ScriptedServer(scripted, model="scripted-judge") as judge:
        yield model, judge


def _requests(servers) -> int:
    return sum(s.stats_snapshot()["requests"] for s in servers)


@pytest.fixture
def data(tmp_path):
    return write_jsonl(tmp_path / "known.jsonl", known_rows())


def _run(data, out, config, **kwargs):
    return asyncio.run(evaluate_path(data, out, config, show_progress=False, **kwargs))


def test_known_judgements_give_known_metrics(servers, data, tmp_path):
    out = tmp_path / "eval"
    outcome = _run(data, out, scripted_config(servers[0].base_url, servers[1].base_url))
    m = outcome.metrics
    # A followed; B 8; C followed; D 10+5; E judge fails; F empty answer -> 0; G generation fails.
    # Every item counts: E and G score 0 on each constraint, so failing raises no rate.
    assert m["items"]["total"] == 7 and m["items"]["judged"] == 5
    assert m["items"]["generation_failed"] == 1 and m["items"]["judge_failed"] == 1
    assert m["items"]["failure_reasons"] == {"generation_failed:connection_error": 1, "judge_failed:invalid_json": 1}
    assert (m["if_s"]["hits"], m["if_s"]["n"]) == (1, 3)  # A yes, B no, F no
    assert (m["if_m"]["hits"], m["if_m"]["n"]) == (1, 4)  # C yes, D no, E and G failed
    assert (m["overall"]["hits"], m["overall"]["n"]) == (2, 7)
    assert (m["csr"]["hits"], m["csr"]["n"]) == (5, 12)
    assert m["mean_score"]["value"] == pytest.approx((10 + 8 + 30 + 15 + 0 + 0 + 0) / 12)
    assert m["by_dimension"]["theme"]["csr"]["value"] == pytest.approx(1 / 2)  # A 10, F 0
    assert m["by_dimension"]["inclusion"]["csr"]["value"] == pytest.approx(1.0)  # C, D
    assert m["by_dimension"]["tone_style"]["csr"]["value"] == pytest.approx(0.0)  # D 5, E failed
    assert m["by_dimension"]["emotion"]["if"]["n"] == 1  # G's, counted though its answer failed
    assert m["by_type"]["content"]["csr"]["value"] == pytest.approx(4 / 8)
    assert json.loads((out / "metrics.json").read_text()) == m

    predictions = pd.read_parquet(out / "predictions")
    judgements = pd.read_parquet(out / "judgements")
    assert sorted(p.name for p in (out / "judgements").glob("part-*.parquet")) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert list(predictions["id"]) == list("ABCDEFG")
    assert predictions.set_index("id").loc["A", "prompt"] == known_rows()[0]["messages"][1]["content"]
    by_id = judgements.set_index("id")
    assert list(by_id.loc["D", "scores"]) == [10, 5] and list(by_id.loc["D", "decided_by"]) == ["llm", "llm"]
    assert by_id.loc["E", "status"] == "judge_failed" and by_id.loc["E", "scores"] is None
    assert by_id.loc["F", "reason"] == "empty_response" and list(by_id.loc["F", "scores"]) == [0]
    # B C D A once, E three times (answers that fail validation are asked again); F needs no judge, G has no answer
    assert servers[1].stats_snapshot()["by_task"] == {"eval.judge": 7}

    md = (out / "report.md").read_text()
    assert "| IF-S | 33.3 |" in md and "| IF-M | 25.0 |" in md
    assert "2 items whose answer failed" not in md and "1 items whose answer failed" in md
    page = (out / "report.html").read_text()
    assert page.count("<svg") == 2 and "<title>" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)  # self-contained
    assert "<script" not in page and "<link" not in page


def _judge_crashing_on_e_once(written: Path):
    """The judge, but item E's judgement raises once `written` exists (waiting for it a while)."""

    async def crashing_judge(*args, **kwargs):
        if "[judge-fail]" in kwargs["description"]:
            for _ in range(1000):
                if written.exists():
                    break
                await asyncio.sleep(0.01)
            raise RuntimeError("simulated crash")
        return await judge_response(*args, **kwargs)

    return crashing_judge


def test_interrupted_eval_resumes_without_reasking(servers, data, tmp_path):
    out = tmp_path / "eval"
    config = scripted_config(servers[0].base_url, servers[1].base_url, concurrency=2, chunk_size=2)

    with pytest.raises(RuntimeError, match="simulated crash"):
        # Item E is in the third chunk: crash once the first is on disk, so the run dies half done.
        _run(data, out, config, judge_fn=_judge_crashing_on_e_once(out / "judgements" / "part-00000.parquet"))
    written = sorted(p.name for p in (out / "judgements").glob("part-*.parquet"))
    assert "part-00000.parquet" in written and "part-00002.parquet" not in written
    cache = RequestCache(out / "cache.sqlite")
    cached = len(cache)
    cache.close()
    before = _requests(servers)

    # Another chunk size on resume must not mix chunk boundaries: the first one is kept.
    outcome = _run(data, out, config.model_copy(update={"chunk_size": 5}))
    after = _requests(servers)
    # Everything answered before the crash came from the cache: only the rest was asked.
    cacheable = 6 + 4  # answers A..F (F's is empty) and judge calls A..D
    assert 0 < cached <= cacheable
    # E's judge answers never validate, so they are never cached: asked 3 times (each reseeded) on resume.
    # G's generation fails, so it is never cached: asked once more unless its chunk (G alone) finished.
    g_again = 0 if "part-00003.parquet" in written else 1
    assert after - before == (cacheable - cached) + 3 + g_again
    assert outcome.stats.skipped_items == sum(
        len(pd.read_parquet(p)) for p in (out / "judgements").glob("part-*.parquet") if p.name in written
    )
    fresh = _run(data, tmp_path / "uninterrupted", config)
    assert outcome.metrics == fresh.metrics
    assert len(list((out / "judgements").glob("part-*.parquet"))) == 4  # 7 items in chunks of 2
    assert json.loads(manifest_path(out, "items").read_text())["chunk_size"] == 2
    assert list(pd.read_parquet(out / "judgements")["id"]) == list("ABCDEFG")


def test_resume_judges_from_stored_predictions(servers, data, tmp_path):
    """A crash after a shard's answers are stored but before it is judged: the rerun judges from
    the predictions shard (a failed answer included) and asks the model nothing."""
    out = tmp_path / "eval"
    config = scripted_config(servers[0].base_url, servers[1].base_url, concurrency=2, chunk_size=7)

    with pytest.raises(RuntimeError, match="simulated crash"):
        # Item E: crash once every answer is on disk.
        _run(data, out, config, judge_fn=_judge_crashing_on_e_once(out / "predictions" / "part-00000.parquet"))
    assert (out / "predictions" / "part-00000.parquet").exists()
    manifest = json.loads(manifest_path(out, "judgements").read_text())
    assert manifest["status"] == "partial" and manifest["shards"] == {}
    model_requests = servers[0].stats_snapshot()["requests"]

    outcome = _run(data, out, config)
    assert servers[0].stats_snapshot()["requests"] == model_requests  # G's failed answer is read back too
    assert outcome.stats.items == 7 and outcome.stats.generation_failed == 1 and outcome.stats.judge_failed == 1
    clean = _run(data, tmp_path / "uninterrupted", config)
    assert outcome.metrics == clean.metrics
    for stage in ("predictions", "judgements"):
        pd.testing.assert_frame_equal(pd.read_parquet(out / stage), pd.read_parquet(tmp_path / "uninterrupted" / stage))


def test_rerun_skips_finished_chunks_and_refuses_other_settings(servers, data, tmp_path):
    out = tmp_path / "eval"
    urls = (servers[0].base_url, servers[1].base_url)
    _run(data, out, scripted_config(*urls))
    requests = _requests(servers)
    # A finished eval run again re-asks what failed for a transient reason (E's judgement, G's answer),
    # transient_retries (2) times at most; then a rerun asks nothing.
    for _ in range(2):
        again = _run(data, out, scripted_config(*urls))
        assert again.stats.items == 4 and again.stats.skipped_items == 3  # the chunks [D E F] and [G]
        assert _requests(servers) == requests + 3 + 1  # E: 3 reseeded asks; G: 1
        requests = _requests(servers)
    again = _run(data, out, scripted_config(*urls))
    assert again.stats.items == 0 and again.stats.skipped_items == 7
    assert _requests(servers) == requests
    other = scripted_config(*urls)
    other.generation.max_tokens = 99
    with pytest.raises(UserError, match="other data or settings .the model or its sampling differ"):
        _run(data, out, other)
    rejudged = scripted_config(*urls)
    rejudged.judging.tokens_per_constraint = 100
    with pytest.raises(UserError, match="the judge or its settings differ"):
        _run(data, out, rejudged)
    with pytest.raises(UserError, match="the items differ"):
        _run(data, out, scripted_config(*urls, limit=3))
    replaced = _run(data, out, other, fresh=True)
    assert replaced.stats.items == 7
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["generation"]["max_tokens"] == 99
    for stage in ("items", "predictions", "judgements"):  # the pipeline's stage manifests
        manifest = json.loads(manifest_path(out, stage).read_text())
        assert manifest["status"] == "done" and manifest["fingerprint"] == run["fingerprints"][stage]
    judged = json.loads(manifest_path(out, "judgements").read_text())
    assert judged["failures"] == {"judge_failed:invalid_json": 1}
    # --fresh keeps the cache, which holds only validated answers: the invalid one is asked again
    assert judged["usage"]["cache_hits"] == 4 and judged["usage"]["requests"] == 3


def test_resume_checks(tmp_path):
    fingerprints = {"items": "a", "predictions": "b", "judgements": "c"}
    for name, fingerprint in fingerprints.items():
        StageStore(tmp_path, name).begin(fingerprint, 1)
    StageStore(tmp_path, "items").write_shard(0, pa.table({"id": ["x"]}))
    assert check_resumable(tmp_path, fingerprints, fresh=False) == []
    # Other items, nothing answered yet: start over without a word.
    other = {"items": "z", "predictions": "y", "judgements": "w"}
    assert check_resumable(tmp_path, other, fresh=False) == ["items", "predictions", "judgements"]
    StageStore(tmp_path, "predictions").write_shard(0, pa.table({"id": ["x"]}))
    with pytest.raises(UserError, match="the items differ"):
        check_resumable(tmp_path, other, fresh=False)
    assert check_resumable(tmp_path, other, fresh=True) == ["items", "predictions", "judgements"]
    # A folder from before the stage store: results without a manifest.
    legacy = tmp_path / "legacy"
    (legacy / "judgements").mkdir(parents=True)
    (legacy / "judgements" / "part-00000.parquet").write_bytes(b"")
    with pytest.raises(UserError, match="earlier trace-build"):
        check_resumable(legacy, fingerprints, fresh=False)


def _write_yaml(path, model_url: str, judge_url: str) -> str:
    path.write_text(
        f"""
model: {{kind: openai, model: scripted, base_urls: ["{model_url}"], concurrency: 4, max_retries: 0}}
judge: {{kind: openai, model: scripted-judge, base_urls: ["{judge_url}"], concurrency: 4, max_retries: 0}}
chunk_size: 4
bootstrap: {{resamples: 200}}
"""
    )
    return str(path)


def test_cli_eval_and_compare(servers, data, tmp_path):
    runner = CliRunner()
    config = _write_yaml(tmp_path / "eval.yaml", servers[0].base_url, servers[1].base_url)
    for name, limit in (("sft", "4"), ("dpo", "7")):
        result = runner.invoke(
            eval_app, ["--data", data, "--out", str(tmp_path / name), "--config", config, "--limit", limit]
        )
        assert result.exit_code == 0, result.output
        assert (tmp_path / name / "metrics.json").is_file()
    assert json.loads((tmp_path / "sft" / "metrics.json").read_text())["items"]["total"] == 4
    result = runner.invoke(
        eval_app, ["compare", str(tmp_path / "sft"), str(tmp_path / "dpo"), "--html", str(tmp_path / "cmp.html")]
    )
    assert result.exit_code == 0, result.output
    assert "IF-S" in result.output and "sft" in result.output and "dpo" in result.output
    page = (tmp_path / "cmp.html").read_text()
    assert page.count("<svg") == 3 and "sft" in page and "dpo" in page


def test_cli_bad_inputs(tmp_path):
    runner = CliRunner()
    result = runner.invoke(eval_app, ["--data", str(tmp_path / "nope.jsonl")])  # --data defaults to the official set
    assert isinstance(result.exception, UserError) and "needs --out DIR" in str(result.exception)
    result = runner.invoke(eval_app, ["--data", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "x")])
    assert isinstance(result.exception, UserError) and "does not exist" in str(result.exception)
    result = runner.invoke(eval_app, ["--data", str(tmp_path), "--out", str(tmp_path / "x"), "--backend", "bogus"])
    assert isinstance(result.exception, UserError) and "unknown --backend" in str(result.exception)
    result = runner.invoke(eval_app, ["compare", str(tmp_path)])
    assert isinstance(result.exception, UserError) and "metrics.json" in str(result.exception)


def test_our_eval_split_with_check_specs(servers, tmp_path):
    import pyarrow.parquet as pq

    from trace_builder.records import FINAL_SCHEMAS

    check = json.dumps({"kind": "keyword_include", "params": {"keywords": ["lighthouse"]}})
    rows = [
        # The scripted judge LLM scores every constraint ([s=N]); where a check exists, the check decides.
        {
            "id": "o1",
            "description": "Write about a lighthouse.",
            "constraints": ["Mention lighthouse [s=0]", "Be clear [s=10]"],
        },
        {
            "id": "o2",
            "description": "Write about a harbour.",
            "constraints": ["Mention lighthouse [s=10]", "Be calm [s=9]"],
        },
    ]
    table = pa.Table.from_pylist(
        [
            dict(
                r,
                seed_id="s",
                language="en",
                dimensions=["inclusion", "tone_style"],
                input="NULL",
                constraint_count=2,
                prompt="",
                response="",
                checks=[check, None],
            )
            for r in rows
        ],
        schema=FINAL_SCHEMAS["eval"],
    )
    folder = tmp_path / "run" / "final" / "eval"
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-00000.parquet")

    outcome = _run(tmp_path / "run", tmp_path / "eval", scripted_config(servers[0].base_url, servers[1].base_url))
    judgements = pd.read_parquet(tmp_path / "eval" / "judgements").set_index("id")
    # The model answers 'My answer to: <description>': o1 names the lighthouse, o2 does not.
    assert list(judgements.loc["o1", "decided_by"]) == ["code", "llm"]
    assert list(judgements.loc["o1", "scores"]) == [10, 10]
    assert list(judgements.loc["o2", "scores"]) == [0, 9]
    assert list(judgements.loc["o1", "llm_scores"]) == [0, 10] and list(judgements.loc["o2", "llm_scores"]) == [10, 9]
    assert (outcome.metrics["overall"]["hits"], outcome.metrics["overall"]["n"]) == (1, 2)
    assert outcome.metrics["by_dimension"]["inclusion"]["csr"]["value"] == pytest.approx(0.5)
    predictions = pd.read_parquet(tmp_path / "eval" / "predictions")
    assert predictions["source"].eq("ours").all()


def test_an_eval_folder_takes_one_run_at_a_time(servers, data, tmp_path):
    from trace_builder.run.lock import RunLock

    out = tmp_path / "eval"
    out.mkdir()
    with RunLock(out), pytest.raises(UserError, match="in use by another run"):
        _run(data, out, scripted_config(servers[0].base_url, servers[1].base_url))
    assert not (out / "judgements").exists()
