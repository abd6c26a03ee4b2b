#!/usr/bin/env python
"""Throughput and peak memory of SFT / DPO / IOPO training on randomly initialised Qwen2-shaped models.

Each case runs in its own process (so peak memory is that case's alone) through the same trainer
builders `trace-build train` uses, on synthetic rows of fixed length. tokens/s counts the
non-padding tokens through the policy forward (SFT: 1 sequence per example, DPO: 2, IOPO: 4)
over the timed steps, after warm-up steps.

    python scripts/bench_train.py --device cuda --sizes qwen2-0.5b-like,qwen2-1.5b-like
    python scripts/bench_train.py --device cpu --sizes tiny            # what a laptop can do
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
            lora=not args.full,
            warmup_ratio=0.0,
            gradient_checkpointing=args.gradient_checkpointing,
            precompute_batch_size=args.batch_size,
        )
        dtype = torch.bfloat16 if config.resolved_bf16() else torch.float32
        model = build_model(args.size, vocab_size=len(tokenizer), dtype=dtype)
        if gpu:
            model = model.to("cuda")
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
        "device": args.device,
        "lora": not args.full,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "batch": args.batch_size,
        "seq_tokens": args.prompt_len + args.response_len,
        "tokens_per_s": round((n1 - n0) / (t1 - t0), 1),
        "examples_per_s": round(args.batch_size * timed_steps / (t1 - t0), 3),
        "step_s": round((t1 - t0) / timed_steps, 3),
        "setup_s": round(setup_s, 2),
        "peak_mem_gib": round(peak / 2**30, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    parser.add_argument("--sizes", default=None, help="comma list of tiny, qwen2-0.5b-like, qwen2-1.5b-like")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}")
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=4, help="examples per step")
    parser.add_argument("--prompt-len", type=int, default=256, help="prompt words (~tokens) per sequence")
    parser.add_argument("--response-len", type=int, default=256, help="response words (~tokens) per sequence")
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    parser.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.case:  # child process: one case, one JSON line
        print("RESULT " + json.dumps(run_case(args)), flush=True)
        return

    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    sizes = (args.sizes or ("qwen2-0.5b-like,qwen2-1.5b-like" if args.device == "cuda" else "tiny")).split(",")
    results = []
    for size in sizes:
        for case in args.cases.split(","):
            if args.full and case.endswith("live-ref"):
                continue  # an adapter-disabled reference needs LoRA
            cmd = [
                sys.executable,
                __file__,
                "--case",
                case,
                "--size",
                size,
                "--device",
                args.device,
                "--steps",
                str(args.steps),
                "--warmup",
                str(args.warmup),
                "--batch-size",
                str(args.batch_size),
                "--prompt-len",
                str(args.prompt_len),
                "--response-len",
                str(args.response_len),
                "--threads",
                str(args.threads),
            ]
            if args.full:
                cmd.append("--full")
            if args.gradient_checkpointing is not None:
                cmd.append("--gradient-checkpointing" if args.gradient_checkpointing else "--no-gradient-checkpointing")
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode or not lines:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                result = {"size": size, "case": case, "device": args.device, "error": " | ".join(tail)[:300]}
            else:
                result = json.loads(lines[-1][len("RESULT ") :])
            results.append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)
    columns = [
        "size",
        "case",
        "params_m",
        "lora",
        "batch",
        "seq_tokens",
        "tokens_per_s",
        "examples_per_s",
        "step_s",
        "setup_s",
        "peak_mem_gib",
    ]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in results:
        if "error" in r:
            print(f"| {r['size']} | {r['case']} | error: {r['error']} |")
        else:
            print("| " + " | ".join(str(r[c]) for c in columns) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
