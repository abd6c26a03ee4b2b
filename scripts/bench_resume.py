"""A target run as a user makes it, against a model-like server: killed at three points and resumed.

    python scripts/bench_resume.py --train-rows 600 --eval-rows 100

The server (its own process) is `ScriptedResponder.model_like()`: yields that fall as the
constraint count grows, lists one item off, numbers out of bounds, refusals (HTTP 400), prose
that fails its checks. The seeds are the built-in ones plus official TRACE eval prompts planted
in the file (Chinese and English). It runs the same command three ways, each through the CLI:
1. uninterrupted;
2. SIGKILLed in the chain, just after admission round 2, and in the filter, resumed each time;
3. the finished run 1 once more (what a plain rerun recovers).
Then prints: final ids equal, damage warnings, stage statuses, seeds on both sides of the split,
planted prompts kept, schema-breaking answers cached (from the server's record of what it broke),
and an eval over every item.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from trace_builder.pipeline.decontaminate import Decontaminator, EvalSet
from trace_builder.resources import official_eval_path
from trace_builder.run.store import StageStore, read_parquet_dir
from trace_builder.seeds import load_builtin_seeds
from trace_builder.testing.devserver import devserver_process
from trace_builder.testing.kills import POINTS, run_and_kill
from trace_builder.testing.scripted import BROKEN_TAG

SPLITS = ("sft", "dpo", "iopo", "eval")
BROKEN = re.compile(re.escape(BROKEN_TAG) + r"[0-9a-f]{12}")


def cli(*args: str) -> tuple[int, str, float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "trace_builder", *args], capture_output=True, text=True)
    return done.returncode, done.stderr, time.perf_counter() - started


def planted_prompts() -> list[str]:
    """Official eval prompts a careless user copies into a seed file: 6 Chinese, 3 English, one description."""
    items = [json.loads(line) for line in official_eval_path().read_text(encoding="utf-8").splitlines()]
    chinese = [i for i in items if any("\u4e00" <= ch <= "\u9fff" for ch in i["description"])]
    english = [i for i in items if i not in chinese]
    return [i["messages"][1]["content"] for i in chinese[:6] + english[:3]] + [english[3]["description"]]


def server_stats(base_url: str) -> dict:
    with urllib.request.urlopen(base_url.rsplit("/v1", 1)[0] + "/v1/_stats", timeout=10) as response:
        return json.loads(response.read())


def final_ids(run: Path) -> dict[str, list[str]]:
    return {name: sorted(read_parquet_dir(run / "final" / name, ["id"])["id"]) for name in SPLITS}


def report(run: Path, planted: list[str], broken: set[str]) -> dict:
    frames = {name: read_parquet_dir(run / "final" / name) for name in SPLITS}
    train_seeds = set().union(*(set(frames[n]["seed_id"]) for n in ("sft", "dpo", "iopo")))
    checker = Decontaminator([EvalSet("planted", tuple(planted))])
    kept_planted = sum(
        checker.first_match([d, i]) is not None
        for frame in frames.values()
        for d, i in zip(frame["description"], frame["input"])
    )
    with sqlite3.connect(run / "cache.sqlite") as db:
        cached = {tag for (text,) in db.execute("SELECT text FROM answers") for tag in BROKEN.findall(text)}
    statuses = {
        name: StageStore(run, name).verified_status() for name in ("seeds", "expand", "respond", "perturb", "filter")
    }
    perturb = read_parquet_dir(run / "perturb", ["status", "reason"])
    return {
        "final_rows": {name: len(frame) for name, frame in frames.items()},
        "stage_status": statuses,
        "seeds_both_sides": len(train_seeds & set(frames["eval"]["seed_id"])),
        "planted_rows_kept": kept_planted,
        "seeds_decontaminated": StageStore(run, "seeds").manifest.get("decontaminated"),
        "broken_answers_sent": len(broken),
        "broken_answers_cached": len(broken & cached),
        "rows_failed_schema": int((perturb["reason"] == "schema_mismatch").sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=600)
    parser.add_argument("--eval-rows", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.01)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--eval-items", type=int, default=120, help="official items in the eval check")
    parser.add_argument("--keep", type=Path, default=None, help="keep the runs here (default: a temp folder)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch, devserver_process(model_like=True, latency=args.latency) as url:
        tmp = args.keep or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        planted = planted_prompts()
        seeds = tmp / "seeds.jsonl"
        rows = [{"text": s.text, "input": s.input} for s in load_builtin_seeds()] + [{"text": p} for p in planted]
        seeds.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
        config = tmp / "config.yaml"
        config.write_text(
            f"backend: {{kind: openai, model: scripted, base_urls: ['{url}'], concurrency: {args.concurrency}}}\n"
            "seeds: {source: '" + str(seeds) + "', input_column: input}\n"
        )

        def command(out: Path) -> list[str]:
            return ["run", "--config", str(config), "--out", str(out), "--train-rows", str(args.train_rows)] + [
                "--eval-rows",
                str(args.eval_rows),
            ]

        clean = tmp / "clean"
        code, stderr, seconds = cli(*command(clean))
        requests = server_stats(url)["requests"]
        print(
            f"uninterrupted: exit {code} in {seconds:.0f} s, {requests} requests; damage warnings: {stderr.count('damaged')}"
        )
        broken = set(server_stats(url)["broken_answers"])
        clean_report = report(clean, planted, broken)

        killed = tmp / "killed"
        for name, condition in POINTS.items():
            hit = run_and_kill(command(killed), killed, condition)
            print(f"killed at {name}: {'yes' if hit else 'no (the run ended first)'}")
        code, stderr, seconds = cli(*command(killed))
        print(f"resumed: exit {code} in {seconds:.0f} s; damage warnings: {stderr.count('damaged')}")
        same = final_ids(killed) == final_ids(clean)
        print(f"final ids identical to the uninterrupted run: {same}")

        before = server_stats(url)["requests"]
        failed_before = clean_report["rows_failed_schema"]
        code, stderr, seconds = cli(*command(clean))
        asked = server_stats(url)["requests"] - before
        after = report(clean, planted, set(server_stats(url)["broken_answers"]))
        print(
            f"plain rerun of the finished run: exit {code}, {asked} requests; rows failed on schema "
            f"{failed_before} -> {after['rows_failed_schema']}"
        )

        sample = tmp / "eval"
        code, stderr, seconds = cli(
            "eval", "--model", "scripted", "--base-url", url, "--judge-model", "scripted", "--judge-base-url", url,
            "--sample", str(args.eval_items), "--out", str(sample),
        )  # fmt: skip
        metrics = json.loads((sample / "metrics.json").read_text()) if code == 0 else {}
        items = metrics.get("items", {})
        print(
            f"eval: exit {code}; {items.get('total')} items, {items.get('judged')} judged, IF {metrics.get('overall', {}).get('hits')}"
            f"/{metrics.get('overall', {}).get('n')} (every item counts); failures {items.get('failure_reasons')}"
        )
        print(json.dumps({"clean": clean_report, "after rerun": after}, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
