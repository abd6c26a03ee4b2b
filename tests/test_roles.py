"""Roles: the judge, the rewriter and the worse-answer writer may each have their own server and model."""

from __future__ import annotations

from tests.conftest import write_config
from tests.test_cli import assert_one_line_error, cli
from trace_builder.config import RunConfig
from trace_builder.llm.roles import role_of
from trace_builder.run.store import read_json
from trace_builder.testing.devserver import ScriptedServer
from trace_builder.testing.scripted import respond


def test_every_task_has_one_role():
    assert [role_of(t) for t in ("respond.judge", "perturb.judge_rejected", "perturb.judge", "eval.judge")] == [
        "judge"
    ] * 4
    assert {role_of(t) for t in ("expand.rewrite", "expand.structure", "expand.quality", "perturb.rewrite")} == {
        "rewriter"
    }
    assert role_of("perturb.worse") == role_of("respond.worse") == "worse"  # the latter: runs made before
    assert {role_of(t) for t in ("respond.answer", "perturb.answer", "seeds.synthesize")} == {"generator"}


def test_a_role_inherits_what_it_leaves_out():
    config = RunConfig.model_validate(
        {"backend": {"kind": "openai", "model": "small", "concurrency": 9}, "roles": {"judge": {"model": "big"}}}
    )
    judge = config.backend_for("judge")
    assert (judge.kind, judge.model, judge.concurrency) == ("openai", "big", 9)
    assert config.backend_for("rewriter") is config.backend


def test_a_judge_on_its_own_server_gets_every_judge_request_and_nothing_else(tmp_path):
    with ScriptedServer(respond) as generator, ScriptedServer(respond, model="scripted-judge") as judge:
        config = write_config(tmp_path / "c.yaml", generator.base_url, limit=8, roles="{judge: {concurrency: 4}}")
        flags = ["--judge-model", "scripted-judge", "--judge-base-url", judge.base_url]
        done = cli("run", "--config", config, "--out", str(tmp_path / "run"), *flags)
        assert done.returncode == 0, done.stderr
        asked_generator = set(generator.stats_snapshot()["by_task"])
        asked_judge = set(judge.stats_snapshot()["by_task"])
        status = cli("status", "--out", str(tmp_path / "run"))
        # The judge's model is in the fingerprints: another judge is another dataset.
        flags[1] = "other-judge"
        changed = cli("run", "--config", config, "--out", str(tmp_path / "run"), *flags)
    assert asked_judge and all(role_of(t) == "judge" for t in asked_judge)
    assert asked_generator and not any(role_of(t) == "judge" for t in asked_generator)
    run = read_json(tmp_path / "run" / "run.json")
    assert run["servers"]["judge"]["model"] == "scripted-judge" and run["servers"]["generator"]["model"] == "scripted"
    assert "by role: generator (scripted)" in status.stdout and "judge (scripted-judge)" in status.stdout
    assert_one_line_error(changed, "built with a different config")


def test_a_bad_role_setting_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("roles: {judge: {concurrency: -2}}\n")
    assert_one_line_error(cli("run", "--config", str(bad)), "roles.judge.concurrency")
    bad.write_text("roles: {critic: {model: x}}\n")
    assert_one_line_error(cli("run", "--config", str(bad)), "roles.critic")
