# Scheduler requests (runtime in minutes, mem_mb) from the config, through transferscope.plan's
# cost model: `transferscope plan` prints the same numbers. Local runs ignore both; on SLURM they
# become `sbatch -t` and `--mem`. `attempt` grows with `retries`, so a job killed for time or
# memory is resubmitted with twice the request (training resumes from its last epoch).
# Cluster-specific values (partition, account) never come from here: see docs/slurm.md.
from transferscope import plan as ts_plan


def runtime_for(rule_name):
    def runtime(wildcards, attempt):
        return ts_plan.job_request(config, rule_name, wildcards, attempt)["runtime"]

    return runtime


def mem_mb_for(rule_name):
    def mem_mb(wildcards, attempt):
        return ts_plan.job_request(config, rule_name, wildcards, attempt)["mem_mb"]

    return mem_mb
