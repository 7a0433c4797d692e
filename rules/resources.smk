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


# A local run starts every ready job its resources allow, so GPU jobs without a `gpu` limit
# would all share one device: unless --resources gpu=N says how many GPUs there are, one at a
# time. Cluster runs (--jobs, an executor plugin) get one GPU per job from the scheduler.
def gpu_limit_given():
    return "gpu" in dict(workflow.global_resources.items())


if (
    workflow.local_exec
    and workflow.global_resources["_nodes"].value is None
    and not gpu_limit_given()
):
    workflow.register_resource("gpu", 1)
