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

from function.core.storage import TMP_SUFFIX
from function.core.store import bucket_store, model_root
from stack_config import BatchSettings

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
    project: str
    region: str
    job_name: str
    bucket_name: str
    scheduler_account_id: str  # the schedule's account, with modelrun:batchJobSchedule
    protect: bool
    labels: dict[str, str]
    model_name: str
    model_version: str
    model_sha256: str | None
    service_settings: dict[str, str]  # the stack's; the job passes on SHARED_SETTINGS
    settings: BatchSettings
    model_bucket: pulumi.Output[str]
    image: pulumi.Output[str]  # the service's: one image serves and scores
    account: gcp.serviceaccount.Account  # the service's runtime account
    public_key: pulumi.Output[str]  # MODEL_PUBLIC_KEY: the signing key's (infra/signing.py)


class BatchJob(pulumi.ComponentResource):
    """The batch bucket, the job, the runtime account's two grants on the bucket, a schedule."""

    def __init__(self, name: str, args: BatchJobArgs, opts: pulumi.ResourceOptions) -> None:
        super().__init__("modelrun:gcp:BatchJob", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)
        self.bucket = gcp.storage.Bucket(
            f"{name}-files",
            name=args.bucket_name,
            project=args.project,
            location=args.region,
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
            force_destroy=not args.protect,
            labels=args.labels,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
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
            name=args.job_name,
            project=args.project,
            location=args.region,
            deletion_protection=args.protect,
            labels=args.labels,
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
                            envs=_environment(args),
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
            _Schedule(
                f"{name}-schedule",
                _ScheduleArgs(
                    project=args.project,
                    region=args.region,
                    account_id=args.scheduler_account_id,
                    schedule=settings.schedule,
                    time_zone=settings.time_zone,
                    job=self.job,
                ),
                child,
            )
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


def _environment(args: BatchJobArgs) -> list[JobTemplateTemplateContainerEnvArgs]:
    """The model the service serves, verified the same way: its URI, version, pin and the key
    that signs it."""
    env = [
        JobTemplateTemplateContainerEnvArgs(
            name="MODEL_URI",
            value=args.model_bucket.apply(lambda b: model_root(bucket_store(b), args.model_name)),
        ),
        JobTemplateTemplateContainerEnvArgs(name="MODEL_VERSION", value=args.model_version),
        JobTemplateTemplateContainerEnvArgs(name="MODEL_PUBLIC_KEY", value=args.public_key),
    ]
    if args.model_sha256:
        env.append(
            JobTemplateTemplateContainerEnvArgs(name="MODEL_SHA256", value=args.model_sha256)
        )
    env += [
        JobTemplateTemplateContainerEnvArgs(name=name, value=args.service_settings[name])
        for name in SHARED_SETTINGS
        if name in args.service_settings
    ]
    return env


@dataclass
class _ScheduleArgs:
    project: str
    region: str
    account_id: str
    schedule: str  # cron, in time_zone
    time_zone: str
    job: gcp.cloudrunv2.Job


class _Schedule(pulumi.ComponentResource):
    """Cloud Scheduler runs the job (POST .../jobs/JOB:run, as the Cloud Run docs' "Execute
    jobs on a schedule" does) as its own account, which may run this job and nothing else."""

    def __init__(self, name: str, args: _ScheduleArgs, opts: pulumi.ResourceOptions) -> None:
        super().__init__("modelrun:gcp:BatchSchedule", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        job = args.job
        account = gcp.serviceaccount.Account(
            name,
            project=args.project,
            account_id=args.account_id,
            display_name="modelrun batch schedule (runs the batch job)",
            opts=child,
        )
        runs = gcp.cloudrunv2.JobIamMember(
            f"{name}-runs-job",
            project=args.project,
            location=args.region,
            name=job.name,
            role="roles/run.invoker",  # run.jobs.run: execute, without overrides
            member=account.member,
            opts=child,
        )
        self.job = gcp.cloudscheduler.Job(
            name,
            project=args.project,
            region=args.region,
            schedule=args.schedule,
            time_zone=args.time_zone,
            http_target=JobHttpTargetArgs(
                http_method="POST",
                uri=job.name.apply(
                    lambda job_name: (
                        f"https://run.googleapis.com/v2/projects/{args.project}/"
                        f"locations/{args.region}/jobs/{job_name}:run"
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
