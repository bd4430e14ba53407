"""The executors' settings: the `[launch]` section (where a study's runs train, and a Slurm job's
resources), which never enters a run's identity. Torch-free: the CLI reads its flags from it;
`rewind.studies` registers it with every kind of settings."""

from __future__ import annotations

from dataclasses import dataclass, fields

from rewind.errors import UserError
from rewind.settings import _check_value, _f


@dataclass(frozen=True)
class LaunchConfig:
    executor: str = _f("inline", "where the study's runs train: inline (in this process), local (one process per "
                                 "run on this machine, one per GPU where there are several) or slurm (a job per "
                                 "run through submitit)", choices=("inline", "local", "slurm"))
    detach: bool = _f(False, "local: start the runs in the background and return at once (slurm always returns "
                             "once the jobs are submitted)")
    local_jobs: int = _f(0, "local: runs at once (0 = one per GPU, or 1 without one)", valid="count0")
    partition: str = _f("", "slurm: the partition (empty = the cluster's default)")
    time_limit: int = _f(240, "slurm: minutes per time slot of a job: 1 to 2 minutes before its end the job "
                              "requeues itself and resumes from its last checkpoint in a new slot, as often as "
                              "it needs while each slot saves a checkpoint (one that saves none fails, saying so); "
                              "at least 3", valid="count1")
    gpus_per_job: int | None = _f(None, "slurm: GPUs per job (default: none with --device cpu or where the "
                                        "partition's nodes have none, else 1)", valid="count0")
    cpus_per_job: int | None = _f(None, "slurm: CPUs per job (default: 8, or all of the partition's largest node "
                                        "if fewer)", valid="count1")
    mem_gb: int | None = _f(None, "slurm: memory per job in GB (default: 32, or all of the partition's largest "
                                  "node if less)", valid="count1")
    array_parallelism: int = _f(64, "slurm: jobs of one array running at once", valid="count1")
    sbatch: str = _f("", "slurm: extra sbatch parameters, 'KEY=VALUE,KEY=VALUE' (e.g. 'account=abc,qos=high')")

    def __post_init__(self) -> None:  # checked here too: `rewind stats` and `stability` build it alone
        for f in fields(self):
            _check_value(f, getattr(self, f.name))
        sbatch_options(self.sbatch)


def sbatch_options(text: str) -> dict[str, str]:
    """'account=abc,qos=high' -> {'account': 'abc', 'qos': 'high'}."""
    out = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UserError(f"bad sbatch parameter {part!r}: write KEY=VALUE pairs separated by commas, "
                            "e.g. 'account=abc,qos=high'")
        if (key := key.strip().replace("_", "-")) in out:
            raise UserError(f"sbatch parameter {key} is given twice ({text!r}); give it once")
        out[key] = value.strip()
    return out
