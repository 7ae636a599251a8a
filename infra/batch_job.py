"""The batch job (modelrun:batchJob): large files scored on Cloud Run Jobs with the service's image.

A private bucket holds the job's files: inputs under `input/`, results under `output/`. The job
runs `python -m function.batch` as the service's runtime account, which may read the bucket and
write only under `output/` (an IAM condition on the object's name); its tasks, their size and
retries come from the stack. With modelrun:batchJobSchedule, Cloud Scheduler runs it through the
Cloud Run Admin API (`jobs/JOB:run`) as an account that may only run this job.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
from pulumi_gcp.cloudrunv2 import (
    JobTemplateArgs,
    JobTemplateTemplateArgs,
    JobTemplateTemplateContainerArgs,
    JobTemplateTemplateContainerEnvArgs,
    JobTemplateTemplateContainerResourcesArgs,
)
from pulumi_gcp.cloudscheduler import JobHttpTargetArgs, JobHttpTargetOauthTokenArgs
from pulumi_gcp.storage import (
    BucketIAMMemberConditionArgs,
    BucketLifecycleRuleActionArgs,
    BucketLifecycleRuleArgs,
    BucketLifecycleRuleConditionArgs,
)

from config import BatchSettings, StackConfig
from function.core.storage import TMP_SUFFIX
from function.core.store import bucket_store, model_root

INPUT, OUTPUT = "input/", "output/"
# Each execution writes to its own prefix: Cloud Run sets CLOUD_RUN_EXECUTION for every task of
# an execution (and keeps it across a task's retries), and function.batch fills it in.
DEFAULT_ARGS = (
    "--input",
    "gs://{bucket}/" + INPUT,
    "--output",
    "gs://{bucket}/" + OUTPUT + "{execution}/",
)
# The service's settings that the batch reads as well (the rest serve HTTP).
SHARED_SETTINGS = (
    "MODEL_RUNTIME",
    "ALLOW_PICKLE",
    "ALLOW_UNSIGNED_MODELS",
    "STORE_TIMEOUT_SECONDS",
    "LOG_LEVEL",
)


@dataclass
class BatchJobArgs:
    config: StackConfig
    settings: BatchSettings
    model_bucket: pulumi.Output[str]
    image: pulumi.Output[str]  # the service's: one image serves and scores
    account: gcp.serviceaccount.Account  # the service's runtime account
    public_key: pulumi.Output[str]  # MODEL_PUBLIC_KEY: the signing key's (infra/signing.py)


class BatchJob(pulumi.ComponentResource):
    """The batch bucket, the job, the runtime account's two grants on the bucket, a schedule."""

    def __init__(self, name: str, args: BatchJobArgs, opts: pulumi.ResourceOptions) -> None:
        super().__init__("modelrun:gcp:BatchJob", name, None, opts)
        config, settings = args.config, args.settings
        child = pulumi.ResourceOptions(parent=self)
        self.bucket = gcp.storage.Bucket(
            f"{name}-files",
            name=config.names.batch_bucket,
            project=config.project,
            location=config.region,
            uniform_bucket_level_access=True,
            public_access_prevention="enforced",
            # A task killed between its upload and its copy leaves a temporary object that only
            # its own retry removes: a day later, the bucket does (function/core/storage.py).
            lifecycle_rules=[
                BucketLifecycleRuleArgs(
                    action=BucketLifecycleRuleActionArgs(type="Delete"),
                    condition=BucketLifecycleRuleConditionArgs(
                        age=1, matches_suffixes=[TMP_SUFFIX]
                    ),
                )
            ],
            force_destroy=not config.deletion_protection,
            labels=config.labels,
            opts=pulumi.ResourceOptions(parent=self, protect=config.deletion_protection),
        )
        member = args.account.member
        grants = [
            gcp.storage.BucketIAMMember(
                f"{name}-reads-files",
                bucket=self.bucket.name,
                role="roles/storage.objectViewer",
                member=member,
                opts=child,
            ),
            # Create and delete (a task's temporary objects), only under output/: IAM
            # Conditions on Cloud Storage test the object's resource name
            # (https://cloud.google.com/storage/docs/access-control/iam#conditions).
            gcp.storage.BucketIAMMember(
                f"{name}-writes-output",
                bucket=self.bucket.name,
                role="roles/storage.objectUser",
                member=member,
                condition=BucketIAMMemberConditionArgs(
                    title="output prefix only",
                    description=f"objects under {OUTPUT} of the batch bucket",
                    expression=self.bucket.name.apply(output_condition),
                ),
                opts=child,
            ),
        ]
        self.job = gcp.cloudrunv2.Job(
            name,
            name=config.names.batch_job,
            project=config.project,
            location=config.region,
            deletion_protection=config.deletion_protection,
            labels=config.labels,
            template=JobTemplateArgs(
                task_count=settings.task_count,
                parallelism=settings.parallelism,
                template=JobTemplateTemplateArgs(
                    service_account=args.account.email,
                    timeout=f"{settings.timeout_seconds}s",
                    max_retries=settings.max_retries,
                    containers=[
                        JobTemplateTemplateContainerArgs(
                            image=args.image,
                            commands=["python", "-m", "function.batch"],
                            args=self.bucket.name.apply(default_args),
                            envs=_environment(config, args.model_bucket, args.public_key),
                            resources=JobTemplateTemplateContainerResourcesArgs(
                                limits={"cpu": settings.cpu, "memory": settings.memory}
                            ),
                        )
                    ],
                ),
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=grants),
        )
        self.schedule = (
            _Schedule(f"{name}-schedule", config, settings, self.job, child)
            if (settings.schedule)
            else None
        )
        self.input_uri = self.bucket.name.apply(lambda b: f"gs://{b}/{INPUT}")
        self.output_uri = self.bucket.name.apply(lambda b: f"gs://{b}/{OUTPUT}")
        self.register_outputs({"job": self.job.name, "bucket": self.bucket.name})


def output_condition(bucket: str) -> str:
    """The IAM condition that admits only objects under output/ of this bucket."""
    return f'resource.name.startsWith("projects/_/buckets/{bucket}/objects/{OUTPUT}")'


def default_args(bucket: str) -> list[str]:
    """The job's arguments when an execution gives none: the input folder, an output per run."""
    return [a.format(bucket=bucket, execution="{execution}") for a in DEFAULT_ARGS]


def _environment(
    config: StackConfig, model_bucket: pulumi.Output[str], public_key: pulumi.Output[str]
) -> list[JobTemplateTemplateContainerEnvArgs]:
    """The model the service serves, verified the same way: its URI, version, pin and the key
    that signs it."""
    env = [
        JobTemplateTemplateContainerEnvArgs(
            name="MODEL_URI",
            value=model_bucket.apply(lambda b: model_root(bucket_store(b), config.model_name)),
        ),
        JobTemplateTemplateContainerEnvArgs(name="MODEL_VERSION", value=config.model_version),
        JobTemplateTemplateContainerEnvArgs(name="MODEL_PUBLIC_KEY", value=public_key),
    ]
    if config.model_sha256:
        env.append(
            JobTemplateTemplateContainerEnvArgs(name="MODEL_SHA256", value=config.model_sha256)
        )
    env += [
        JobTemplateTemplateContainerEnvArgs(name=name, value=config.service_settings[name])
        for name in SHARED_SETTINGS
        if name in config.service_settings
    ]
    return env


class _Schedule(pulumi.ComponentResource):
    """Cloud Scheduler runs the job (POST .../jobs/JOB:run, as the Cloud Run docs' "Execute
    jobs on a schedule" does) as its own account, which may run this job and nothing else."""

    def __init__(
        self,
        name: str,
        config: StackConfig,
        settings: BatchSettings,
        job: gcp.cloudrunv2.Job,
        opts: pulumi.ResourceOptions,
    ) -> None:
        super().__init__("modelrun:gcp:BatchSchedule", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        account = gcp.serviceaccount.Account(
            name,
            project=config.project,
            account_id=config.names.account("scheduler"),
            display_name="modelrun batch schedule (runs the batch job)",
            opts=child,
        )
        runs = gcp.cloudrunv2.JobIamMember(
            f"{name}-runs-job",
            project=config.project,
            location=config.region,
            name=job.name,
            role="roles/run.invoker",  # run.jobs.run: execute, without overrides
            member=account.member,
            opts=child,
        )
        self.job = gcp.cloudscheduler.Job(
            name,
            project=config.project,
            region=config.region,
            schedule=settings.schedule,
            time_zone=settings.time_zone,
            http_target=JobHttpTargetArgs(
                http_method="POST",
                uri=job.name.apply(
                    lambda job_name: (
                        f"https://run.googleapis.com/v2/projects/{config.project}/"
                        f"locations/{config.region}/jobs/{job_name}:run"
                    )
                ),
                oauth_token=JobHttpTargetOauthTokenArgs(
                    service_account_email=account.email,
                    scope="https://www.googleapis.com/auth/cloud-platform",
                ),
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[runs]),
        )
        self.register_outputs({})
