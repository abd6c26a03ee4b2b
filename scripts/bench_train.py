#!/usr/bin/env python
"""Throughput and peak memory of SFT / DPO / IOPO training on randomly initialised Qwen2-shaped models.

Each case runs in its own process (so peak memory is that case's alone) through the same trainer
builders `trace-build train` uses, on synthetic rows of fixed length. tokens/s counts the
non-padding tokens through the policy forward (SFT: 1 sequence per example, DPO: 2, IOPO: 4)
over the timed steps, after warm-up steps. A mode is LoRA or full fine-tuning, with gradient
checkpointing on (`-gc`) or off; bf16 whenever the device supports it.

    python scripts/bench_train.py --device cuda --modes lora-gc,full-gc,lora,full --json out.jsonl
    python scripts/bench_train.py --device cpu --sizes tiny --modes lora   # what a laptop can do
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    # name: (method, reference mode)
    "sft": ("sft", "precompute"),
    "dpo": ("dpo", "precompute"),
    "dpo-live-ref": ("dpo", "adapter"),
    "iopo": ("iopo", "precompute"),
    "iopo-live-ref": ("iopo", "adapter"),
}


def run_case(args: argparse.Namespace) -> dict:
    import resource

    import torch
    from transformers import TrainerCallback

    from trace_builder.testing.tiny import build_model, build_tokenizer, synthetic_rows
    from trace_builder.train.config import load_config
    from trace_builder.train.runner import BUILDERS

    if args.threads:
        torch.set_num_threads(args.threads)
    method, reference = CASES[args.case]
    gpu = args.device == "cuda"
    total_steps = args.warmup + args.steps
    n_rows = args.batch_size * total_steps
    rows = synthetic_rows(method, n_rows, prompt_words=args.prompt_len, response_words=args.response_len)
    tokenizer = build_tokenizer()
    with tempfile.TemporaryDirectory() as out:
        config = load_config(
            method,
            data="-",
            model="-",
            output=out,
            max_steps=total_steps,
            per_device_train_batch_size=args.batch_size,
            gradient_accumulation_steps=1,
            max_length=args.prompt_len + args.response_len + 64,
            logging_steps=1000,
            save_steps=10**9,
            device=args.device,
            reference=reference,
            lora=args.mode.startswith("lora"),
            warmup_ratio=0.0,
            gradient_checkpointing=args.mode.endswith("-gc"),
            precompute_batch_size=args.batch_size,
        )
        dtype = torch.bfloat16 if config.resolved_bf16() else torch.float32
        model = build_model(args.size, vocab_size=len(tokenizer), dtype=dtype, device=args.device)
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        built = time.perf_counter()
        trainer = BUILDERS[method](config, model, tokenizer, rows)
        setup_s = time.perf_counter() - built  # includes the reference precompute pass when there is one

        marks: list[tuple[float, int]] = []

        class Clock(TrainerCallback):
            def on_step_end(self, a, state, control, **kw):
                if gpu:
                    torch.cuda.synchronize()
                marks.append((time.perf_counter(), state.num_input_tokens_seen))

        trainer.add_callback(Clock())
        trainer.train()
    # timed window: from the end of the last warm-up step (or the start of training) to the last step
    t0, n0 = marks[args.warmup - 1] if args.warmup else (built + setup_s, 0)
    t1, n1 = marks[-1]
    peak = torch.cuda.max_memory_allocated() if gpu else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    timed_steps = args.steps
    return {
        "size": args.size,
        "case": args.case,
        "mode": args.mode,
        "device": args.device,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "batch": args.batch_size,
        "seq_tokens": args.prompt_len + args.response_len,
        "tokens_per_s": round((n1 - n0) / (t1 - t0), 1),
        "examples_per_s": round(args.batch_size * timed_steps / (t1 - t0), 3),
        "step_s": round((t1 - t0) / timed_steps, 3),
        "setup_s": round(setup_s, 2),
        "peak_mem_gib": round(peak / 2**30, 2),
    }


MODES = ("lora-gc", "lora", "full-gc", "full")
COLUMNS = [
    "size",
    "mode",
    "case",
    "params_m",
    "batch",
    "seq_tokens",
    "tokens_per_s",
    "step_s",
    "setup_s",
    "peak_mem_gib",
]


def child_command(args: argparse.Namespace, size: str, mode: str, case: str) -> list[str]:
    command = [sys.executable, __file__, "--case", case, "--size", size, "--mode", mode, "--device", args.device]
    for flag in ("steps", "warmup", "batch_size", "prompt_len", "response_len", "threads"):
        command += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
    return command


def run_child(args: argparse.Namespace, size: str, mode: str, case: str) -> dict:
    """One case in a fresh process, bounded by --case-timeout; a failure becomes a result with an error."""
    started = time.perf_counter()
    failed = {"size": size, "mode": mode, "case": case, "device": args.device}
    try:
        proc = subprocess.run(
            child_command(args, size, mode, case),
            capture_output=True,
            text=True,
            timeout=args.case_timeout,
            env={**os.environ, "TQDM_DISABLE": "1"},
        )
    except subprocess.TimeoutExpired:
        return {**failed, "error": f"timed out after {args.case_timeout} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {**failed, "error": " | ".join(tail)[:400]}
    return {**json.loads(lines[-1][len("RESULT ") :]), "wall_s": round(time.perf_counter() - started, 1)}


def ratio_rows(results: list[dict]) -> list[str]:
    """IOPO against DPO per size and mode (same reference mode): tokens/s and peak memory."""
    found = {(r["size"], r["mode"], r["case"]): r for r in results if "error" not in r}
    rows = []
    for (size, mode, case), iopo in found.items():
        if not case.startswith("iopo"):
            continue
        dpo = found.get((size, mode, case.replace("iopo", "dpo")))
        if dpo:
            speed = iopo["tokens_per_s"] / dpo["tokens_per_s"]
            memory = iopo["peak_mem_gib"] / dpo["peak_mem_gib"]
            rows.append(f"| {size} | {mode} | {case} / {dpo['case']} | {speed:.2f} | {memory:.2f} |")
    return rows


def print_tables(results: list[dict]) -> None:
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for r in results:
        if "error" in r:
            print(f"| {r['size']} | {r['mode']} | {r['case']} | error: {r['error']} |")
        else:
            print("| " + " | ".join(str(r[c]) for c in COLUMNS) + " |")
    ratios = ratio_rows(results)
    if ratios:
        print()
        print("| size | mode | cases | tokens/s ratio | peak memory ratio |")
        print("|---|---|---|---|---|")
        print("\n".join(ratios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    parser.add_argument("--sizes", default=None, help="comma list of tiny, qwen2-0.5b-like, qwen2-1.5b-like")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}")
    parser.add_argument("--modes", default="lora-gc", help=f"comma list of {', '.join(MODES)}, run in this order")
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=4, help="examples per step")
    parser.add_argument("--prompt-len", type=int, default=256, help="prompt words (~tokens) per sequence")
    parser.add_argument("--response-len", type=int, default=256, help="response words (~tokens) per sequence")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--case-timeout", type=int, default=300, help="seconds one case may take")
    parser.add_argument("--json", type=Path, default=None, help="append each result here as a JSON line")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.case:  # child process: one case, one JSON line
        print("RESULT " + json.dumps(run_case(args)), flush=True)
        return

    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    sizes = (args.sizes or ("qwen2-0.5b-like,qwen2-1.5b-like" if args.device == "cuda" else "tiny")).split(",")
    modes = args.modes.split(",")
    unknown = sorted(set(modes) - set(MODES)) + sorted(set(args.cases.split(",")) - set(CASES))
    if unknown:
        parser.error(f"unknown mode or case: {', '.join(unknown)}")
    results = []
    for mode in modes:
        for size in sizes:
            for case in args.cases.split(","):
                if case.endswith("live-ref") and not mode.startswith("lora"):
                    continue  # an adapter-disabled reference needs LoRA
                result = run_child(args, size, mode, case)
                results.append(result)
                print(json.dumps(result), file=sys.stderr, flush=True)
                if args.json:
                    with args.json.open("a") as f:
                        f.write(json.dumps(result) + "\n")
    print_tables(results)


if __name__ == "__main__":
    main()
