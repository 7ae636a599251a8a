"""infra/payload_sink.py under mocks: nothing when the sample rate is 0; above it, the BigQuery
dataset, the Log Router sink into it (this service's labelled lines only), its writer's grant on
that dataset alone, the _Default bucket's exclusion, and the trainer's read access."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.infra import (
    PROJECT,
    Stack,
    account_email,
    container,
    iam_members,
    run_program,
    stack_config,
)

DATASET = "gcp:bigquery/dataset:Dataset"
SINK = "gcp:logging/projectSink:ProjectSink"
EXCLUSION = "gcp:logging/projectExclusion:ProjectExclusion"
WRITER = "serviceAccount:service-123@gcp-sa-logging.iam.gserviceaccount.com"


def env(stack: Stack) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container(stack).get("envs", [])}


@pytest.fixture(scope="module")
def stack() -> Stack:
    return run_program(stack_config(**{"modelrun:payloadSampleRate": "0.25"}))


def test_off_by_default_makes_nothing() -> None:
    stack = run_program(stack_config())
    types = {r.type for r in stack.resources}
    assert not types & {DATASET, SINK, EXCLUSION}
    assert not [r for r in iam_members(stack) if "bigquery" in r.inputs.get("role", "")]
    assert "bigquery.googleapis.com" not in {
        r.inputs["service"] for r in stack.of_type("gcp:projects/service:Service")
    }
    assert "PAYLOAD_SAMPLE_RATE" not in env(stack)
    assert "payloadDataset" not in stack.outputs


def test_the_dataset_keeps_each_days_partition_for_the_retention(stack: Stack) -> None:
    dataset = stack.one(DATASET)
    assert dataset.inputs["location"] == "europe-west1"
    assert dataset.inputs["datasetId"] == "modelrun_dev_payloads"
    assert dataset.inputs["defaultPartitionExpirationMs"] == 90 * 86_400_000
    assert "defaultTableExpirationMs" not in dataset.inputs  # it would drop the sink's table
    assert dataset.protect is True
    assert stack.outputs["payloadDataset"] == f"{PROJECT}.modelrun_dev_payloads"


def test_the_sink_routes_this_services_payload_lines_into_partitioned_tables(stack: Stack) -> None:
    sink = stack.one(SINK)
    assert sink.inputs["destination"] == (
        f"bigquery.googleapis.com/projects/{PROJECT}/datasets/modelrun_dev_payloads"
    )
    assert sink.inputs["uniqueWriterIdentity"] is True
    assert sink.inputs["bigqueryOptions"] == {"usePartitionedTables": True}
    clauses = set(sink.inputs["filter"].split(" AND "))
    assert clauses == {
        f'logName="projects/{PROJECT}/logs/run.googleapis.com%2Fstdout"',  # the table's name
        'resource.type="cloud_run_revision"',
        'resource.labels.service_name="modelrun-dev"',
        'labels.modelrun_record="payload"',  # what the service labels a record line with
    }


def test_the_records_stay_out_of_the_default_bucket(stack: Stack) -> None:
    assert stack.one(EXCLUSION).inputs["filter"] == stack.one(SINK).inputs["filter"]


def bigquery_grants(stack: Stack) -> list[tuple[str, str, str]]:
    found = []
    for r in iam_members(stack):
        if "bigquery" in r.inputs["role"]:
            on = r.inputs.get("datasetId") or f"project {r.inputs['project']}"
            found.append((r.inputs["role"], r.inputs["member"], on))
    return sorted(found)


def test_each_identity_gets_the_least_it_needs(stack: Stack) -> None:
    trainer = f"serviceAccount:{account_email(stack, 'trainer')}"
    assert bigquery_grants(stack) == [
        ("roles/bigquery.dataEditor", WRITER, "modelrun_dev_payloads"),  # the sink writes
        ("roles/bigquery.dataViewer", trainer, "modelrun_dev_payloads"),  # evaluate reads
        ("roles/bigquery.jobUser", trainer, f"project {PROJECT}"),  # ...with query jobs
    ]
    runtime = f"serviceAccount:{account_email(stack, 'runtime')}"
    assert runtime not in {member for _, member, _ in bigquery_grants(stack)}  # it only logs


def test_the_service_is_told_the_rate(stack: Stack) -> None:
    assert env(stack)["PAYLOAD_SAMPLE_RATE"] == "0.25"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"modelrun:payloadSampleRate": "1.5"}, "from 0 to 1, got '1.5'"),
        ({"modelrun:payloadSampleRate": "often"}, "payloadSampleRate must be a number from 0 to 1"),
        ({"modelrun:payloadSampleRate": "nan"}, "payloadSampleRate must be a number from 0 to 1"),
        ({"modelrun:payloadRetentionDays": 0}, "payloadRetentionDays must be at least 1, got 0"),
    ],
)  # fmt: skip
def test_a_bad_setting_is_named(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_program(stack_config(**changes))
