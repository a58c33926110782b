"""`xlmr-np eval --executor local|dask|ray|slurm`: the options that fan an evaluation's shards out on an
backend, and the call behind it (a thin layer over xlmr_np.cmteb.executors.run_on_backend)."""

from __future__ import annotations

import argparse

from ..errors import InputError
from .common import nonnegative_int, positive_int


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (an sbatch option without its dashes), got {text!r}")
    return key, value


def add_arguments(parser) -> None:
    from ..cmteb.backends import EXECUTORS

    group = parser.add_argument_group(
        "backends", "run every shard on a backend, retry the lost ones and merge them: the results of one run"
    )
    group.add_argument(
        "--executor",
        choices=EXECUTORS,
        help="local (processes here), dask, ray or slurm (through submitit); each but local needs "
        "its extra: pip install 'xlmr-np[dask]' / '[ray]' / '[slurm]'",
    )
    group.add_argument(
        "--shards",
        type=positive_int,
        metavar="N",
        help="shards to cut the work into (default: as many as the backend runs at once)",
    )
    group.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="dask: tcp://host:8786; ray: ray://host:10001 or auto (default: start one on this machine)",
    )
    group.add_argument(
        "--local-workers",
        type=positive_int,
        metavar="K",
        help="shards at once on a backend started here (default: cores / --cores-per-shard)",
    )
    group.add_argument(
        "--cores-per-shard",
        type=positive_int,
        default=1,
        metavar="C",
        help="BLAS threads of each shard; Ray and Slurm reserve that many CPUs (default 1)",
    )
    group.add_argument(
        "--retries",
        type=nonnegative_int,
        default=2,
        help="times a shard whose worker died is submitted again (default 2)",
    )
    group.add_argument(
        "--slurm-local",
        action="store_true",
        help="slurm: run the jobs on this machine through submitit's LocalExecutor",
    )
    group.add_argument("--slurm-partition", help="slurm: the partition")
    group.add_argument(
        "--slurm-time",
        type=positive_int,
        default=24 * 60,
        metavar="MINUTES",
        help="slurm: each job's time limit (default 1440)",
    )
    group.add_argument("--slurm-mem", metavar="SIZE", help="slurm: memory per job, e.g. 4G")
    group.add_argument(
        "--slurm-param",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="slurm: any other sbatch option, e.g. account=myproject (repeatable)",
    )
    group.add_argument(
        "--slurm-folder",
        metavar="DIR",
        help="slurm: submitit's job folder, on storage the nodes share (default: OUT/jobs)",
    )


def run_from_args(args) -> dict:
    """run_on_backend with the command's options; raises XlmrNpError for options that do not go together."""
    from ..cmteb.backends import SlurmOptions
    from ..cmteb.executors import run_on_backend

    if args.shard is not None:
        raise InputError("--shard runs one shard; --executor runs all of them: give one or the other")
    if args.processes != 1:
        raise InputError(
            "--processes splits one process; with --executor give --local-workers (shards at once) and "
            "--cores-per-shard"
        )
    slurm = SlurmOptions(
        folder=args.slurm_folder,
        partition=args.slurm_partition,
        time_min=args.slurm_time,
        mem=args.slurm_mem,
        params=dict(args.slurm_param),
        local=args.slurm_local,
    )
    return run_on_backend(
        args.model,
        args.task,
        executor=args.executor,
        out_dir=args.out,
        shards=args.shards,
        cache_dir=args.score_cache,
        batch_size=args.batch_size,
        max_queries=args.max_queries,
        seed=args.seed,
        max_length=args.max_length,
        truncation=args.truncation,
        address=args.scheduler,
        workers=args.local_workers,
        cores_per_shard=args.cores_per_shard,
        retries=args.retries,
        slurm=slurm,
        revision=args.revision,
        data_dir=args.data_dir,
        device=args.device,
    )
