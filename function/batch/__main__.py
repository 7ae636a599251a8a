"""python -m function.batch: score a task's share of a large file (see the README, "Score a
large file"). Exit codes: 0 done, 1 an error (one line naming it), 2 a bad flag, 3 more refused
rows than --max-error-share."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from function.batch.task import Job, TooManyErrors, run_task
from function.core.config import (
    LOG_LEVELS,
    RUNTIMES,
    load_trust,
    parse_boolean,
    parse_seconds,
    parse_sha256,
    parse_version,
    refuse_onnx_pin,
)
from function.core.errors import ModelrunError
from function.core.logs import setup_logging

log = logging.getLogger("modelrun.batch")


def parse_job(
    argv: Sequence[str], environ: Mapping[str, str], prog: str = "python -m function.batch"
) -> Job:
    """The job from flags, each defaulting to the service's variable of the same meaning; a bad
    value exits 2 naming it."""
    env = {k: v.strip() for k, v in environ.items() if v.strip()}
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument(
        "--input",
        required=True,
        help="gs://BUCKET/PATH or file:///PATH: a CSV or JSON Lines file, or a "
        "folder or prefix of them",
    )
    parser.add_argument(
        "--output",
        required=True,
        help="gs:// or file:// prefix for the results; {execution} stands for "
        "CLOUD_RUN_EXECUTION (one prefix per execution of a Cloud Run job)",
    )
    parser.add_argument(
        "--model", default=env.get("MODEL_URI"), help="the model's root (default: MODEL_URI)"
    )
    parser.add_argument(
        "--model-version",
        default=env.get("MODEL_VERSION", "current"),
        help="a version id or current (default: MODEL_VERSION, else current)",
    )
    parser.add_argument(
        "--model-sha256",
        default=env.get("MODEL_SHA256"),
        help="refuse any other model (default: MODEL_SHA256)",
    )
    parser.add_argument(
        "--id-column",
        help="copy this column (or key) into the results; default: each row's line number",
    )
    parser.add_argument(
        "--max-error-share",
        type=_share,
        default=0.01,
        help="exit 3 when more of a task's rows are refused (default 0.01)",
    )
    parser.add_argument(
        "--task-index",
        type=int,
        default=env.get("CLOUD_RUN_TASK_INDEX", "0"),  # argparse converts a string default
        help="this task (default: CLOUD_RUN_TASK_INDEX, else 0)",
    )
    parser.add_argument(
        "--task-count",
        type=int,
        default=env.get("CLOUD_RUN_TASK_COUNT", "1"),
        help="the job's tasks (default: CLOUD_RUN_TASK_COUNT, else 1)",
    )
    parser.add_argument(
        "--progress-rows", type=int, default=1_000_000, help="log progress every this many rows"
    )
    parser.add_argument(
        "--block-bytes",
        type=int,
        default=Job.block_bytes,
        help="read this much of the input at a time (memory against per-call "
        "overhead; default 1 MiB)",
    )
    args = parser.parse_args(argv)
    # A plain path is a local one, as `package` and `publish` take it.
    for place in ("input", "output", "model"):
        value = getattr(args, place)
        if value and "://" not in value:
            setattr(args, place, Path(value).resolve().as_uri() + ("/" * value.endswith("/")))
    if not args.model:
        parser.error("--model (or MODEL_URI) is required")
    if "{execution}" in args.output:
        if "CLOUD_RUN_EXECUTION" not in env:
            parser.error("--output holds {execution}, but CLOUD_RUN_EXECUTION is not set")
        args.output = args.output.replace("{execution}", env["CLOUD_RUN_EXECUTION"])
    if not 0 <= args.task_index < args.task_count:
        parser.error(f"task {args.task_index} of {args.task_count} does not exist")
    runtime = env.get("MODEL_RUNTIME", "auto").lower()
    if runtime not in RUNTIMES:
        parser.error(f"MODEL_RUNTIME={runtime!r} must be one of {', '.join(RUNTIMES)}")
    if env.get("LOG_LEVEL", "INFO").upper() not in LOG_LEVELS:
        parser.error(f"LOG_LEVEL={env['LOG_LEVEL']!r} must be one of {', '.join(LOG_LEVELS)}")
    try:
        version = parse_version(args.model_version)
        sha256 = parse_sha256(args.model_sha256) if args.model_sha256 else None
        allow_pickle = parse_boolean(env.get("ALLOW_PICKLE", "true"))
    except (ValueError, ModelrunError) as e:
        parser.error(f"the model's version, sha256 or ALLOW_PICKLE is invalid: {e}")
    try:
        refuse_onnx_pin(runtime, sha256)
        trust = load_trust(env)
    except ModelrunError as e:
        parser.error(str(e))
    return Job(
        input=args.input,
        output=args.output,
        model_uri=args.model,
        model_version=version,
        model_sha256=sha256,
        runtime=runtime,
        allow_pickle=allow_pickle,
        trust=trust,
        id_column=args.id_column,
        task_index=args.task_index,
        task_count=args.task_count,
        max_error_share=args.max_error_share,
        progress_rows=max(args.progress_rows, 1),
        block_bytes=max(args.block_bytes, 1024),
        store_timeout=_seconds(env.get("STORE_TIMEOUT_SECONDS", "30"), parser),
    )


def _seconds(raw: str, parser: argparse.ArgumentParser) -> float:
    try:
        return parse_seconds(raw)  # the service's rule for the same variable
    except ValueError:
        parser.error(f"STORE_TIMEOUT_SECONDS={raw!r} must be a positive number of seconds")


def _share(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= 1:
        raise ValueError(raw)
    return value


def main(argv: Sequence[str] | None = None, prog: str = "python -m function.batch") -> int:
    job = parse_job(sys.argv[1:] if argv is None else argv, os.environ, prog)
    setup_logging((os.environ.get("LOG_LEVEL", "").strip() or "INFO").upper())
    try:
        run_task(job)
    except TooManyErrors as e:
        log.error("%s", e)
        return 3
    except ModelrunError as e:
        log.error("task %d/%d failed: %s", job.task_index, job.task_count, e)
        return 1
    except Exception as e:  # unexpected (a model that raises, a bug): one line, never a traceback
        log.error(
            "task %d/%d failed unexpectedly: %s: %s", job.task_index, job.task_count,
            type(e).__name__, e,
        )  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
