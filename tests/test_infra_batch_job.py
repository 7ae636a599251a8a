"""The Pulumi program under Pulumi's mocks (tests/support/infra.py): the batch job
(modelrun:batchJob), its bucket, its grants and its schedule."""

from __future__ import annotations

import pytest

from tests.support.infra import (
    BATCH,
    PROJECT,
    Stack,
    account_email,
    container,
    iam_members,
    run_program,
    stack_config,
)

JOB = "gcp:cloudrunv2/job:Job"


@pytest.fixture(scope="module")
def batch_stack() -> Stack:
    return run_program(stack_config(**BATCH))


def test_no_batch_job_unless_asked(stack: Stack) -> None:
    assert not stack.of_type(JOB)
    assert not stack.of_type("modelrun:gcp:BatchJob")
    assert not stack.of_type("gcp:cloudscheduler/job:Job")
    assert "batchJob" not in stack.outputs


def test_the_batch_job_scores_with_the_services_image_account_and_model(batch_stack: Stack) -> None:
    job = batch_stack.one(JOB).inputs
    task = job["template"]["template"]
    [app] = task["containers"]
    service_env = {e["name"]: e.get("value") for e in container(batch_stack)["envs"]}
    env = {e["name"]: e["value"] for e in app["envs"]}
    bucket = batch_stack.one("gcp:storage/bucket:Bucket", "batch-files").inputs["name"]

    assert job["name"] == "modelrun-dev-batch"
    assert (job["template"]["taskCount"], job["template"]["parallelism"]) == (10, 0)
    assert (task["timeout"], task["maxRetries"]) == ("3600s", 3)
    assert task["serviceAccount"] == account_email(batch_stack, "runtime")
    assert app["image"] == container(batch_stack)["image"]
    assert app["commands"] == ["python", "-m", "function.batch"]
    assert app["args"] == ["--input", f"gs://{bucket}/input/",
                           "--output", f"gs://{bucket}/output/{{execution}}/"]  # fmt: skip
    assert app["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}
    assert env == {k: service_env[k] for k in ("MODEL_URI", "MODEL_VERSION", "MODEL_PUBLIC_KEY")}
    assert batch_stack.outputs["batchJob"] == "modelrun-dev-batch"
    assert batch_stack.outputs["batchInput"] == f"gs://{bucket}/input/"


def test_the_batch_bucket_is_private_and_written_only_under_output(batch_stack: Stack) -> None:
    """A policy: the runtime account reads the batch bucket and may write in it only under
    output/ (an IAM condition on the object name); nothing else on it is granted."""
    files = batch_stack.one("gcp:storage/bucket:Bucket", "batch-files").inputs
    grants = [r.inputs for r in batch_stack.of_type("gcp:storage/bucketIAMMember:BucketIAMMember")
              if r.inputs["bucket"] == files["name"]]  # fmt: skip
    runtime = f"serviceAccount:{account_email(batch_stack, 'runtime')}"

    assert files["publicAccessPrevention"] == "enforced"
    assert files["uniformBucketLevelAccess"] is True
    # what a killed task left half-written goes after a day; nothing else is ever deleted
    assert files["lifecycleRules"] == [
        {
            "action": {"type": "Delete"},
            "condition": {"age": 1, "matchesSuffixes": [".modelrun-tmp"]},
        }
    ]
    assert {g["member"] for g in grants} == {runtime}
    readers = [g for g in grants if g["role"] == "roles/storage.objectViewer"]
    writers = [g for g in grants if g["role"] != "roles/storage.objectViewer"]
    assert len(readers) == 1 and "condition" not in readers[0]
    assert [g["role"] for g in writers] == ["roles/storage.objectUser"]
    assert writers[0]["condition"]["expression"] == (
        f'resource.name.startsWith("projects/_/buckets/{files["name"]}/objects/output/")'
    )


def test_a_deploy_may_update_the_batch_job(batch_stack: Stack) -> None:
    deployer = f"serviceAccount:{account_email(batch_stack, 'deployer')}"
    on_job = batch_stack.of_type("gcp:cloudrunv2/jobIamMember:JobIamMember")

    assert [(r.inputs["role"], r.inputs["member"]) for r in on_job] == [
        ("roles/run.developer", deployer)
    ]
    assert on_job[0].inputs["name"] == "modelrun-dev-batch"


def test_a_schedule_runs_the_job_as_an_account_that_may_only_run_it() -> None:
    stack = run_program(stack_config(**BATCH, **{"modelrun:batchJobSchedule": "0 2 * * *"}))
    schedule = stack.one("gcp:cloudscheduler/job:Job").inputs
    scheduler = account_email(stack, "scheduler")
    grants = [r for r in iam_members(stack) if r.inputs["member"] == f"serviceAccount:{scheduler}"]

    assert (schedule["schedule"], schedule["timeZone"]) == ("0 2 * * *", "Etc/UTC")
    assert schedule["httpTarget"]["httpMethod"] == "POST"
    assert schedule["httpTarget"]["uri"] == (
        f"https://run.googleapis.com/v2/projects/{PROJECT}/locations/europe-west1/"
        "jobs/modelrun-dev-batch:run"
    )
    assert schedule["httpTarget"]["oauthToken"]["serviceAccountEmail"] == scheduler
    assert [(r.type, r.inputs["role"], r.inputs["name"]) for r in grants] == [
        ("gcp:cloudrunv2/jobIamMember:JobIamMember", "roles/run.invoker", "modelrun-dev-batch")
    ]
    assert "cloudscheduler.googleapis.com" in {
        r.inputs["service"] for r in stack.of_type("gcp:projects/service:Service")
    }


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"modelrun:batchJobTaskCount": "0"}, "batchJobTaskCount must be 1..10000"),
        ({"modelrun:batchJobTaskCount": "10001"}, "batchJobTaskCount must be 1..10000"),
        ({"modelrun:batchJobParallelism": "11"}, "batchJobParallelism must be 0"),
        ({"modelrun:batchJobTimeoutSeconds": "604801"}, "168 hours"),
        ({"modelrun:batchJobMaxRetries": "11"}, "batchJobMaxRetries must be 0..10"),
        ({"modelrun:batchJobCpu": "3"}, "modelrun:batchJobCpu above 1 must be 2, 4, 6 or 8"),
        ({"modelrun:batchJobMemory": "8Gi"}, "batchJobMemory 8Gi needs modelrun:batchJobCpu"),
        ({"modelrun:batchJobSchedule": "nightly"}, "batchJobSchedule must be a cron schedule"),
    ],
)  # fmt: skip
def test_job_settings_cloud_run_would_refuse_are_refused(
    changes: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        run_program(stack_config(**BATCH, **changes))

    assert refused.value.setting in changes  # the error names the setting to change


def test_job_settings_are_not_checked_while_there_is_no_job() -> None:
    run_program(stack_config(**{"modelrun:batchJobTaskCount": "0"}))
