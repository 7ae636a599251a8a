"""Where the service's payload records go in the cloud: a Log Router sink into BigQuery.

The service writes each record as one structured line on stdout, labelled
`modelrun_record=payload` (function/core/records.py). Cloud Run hands the line to Cloud Logging;
this sink routes the labelled lines of this service into a BigQuery dataset, one day-partitioned
table (`run_googleapis_com_stdout`, named after the log), and an exclusion keeps them out of the
_Default log bucket, so they are stored (and billed) once. Nothing on the request path waits on
BigQuery: Google's engine holds the data from the moment the line is written (docs/PAYLOADS.md).

The sink writes as its own identity (`unique_writer_identity`), which may edit this dataset's
tables and nothing else. Partitions older than the retention expire; no table expiration is set,
because it would drop the sink's whole table (and every partition in it) that many days after it
was made.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

RECORD_LABEL = "modelrun_record"  # the label the service puts on a payload line...
RECORD_VALUE = "payload"  # ...and its value
STDOUT_LOG = "run.googleapis.com%2Fstdout"
WRITER_ROLE = "roles/bigquery.dataEditor"
MS_PER_DAY = 86_400_000


@dataclass
class PayloadSinkArgs:
    project: str
    region: str
    service_name: str
    dataset_id: str
    retention_days: int
    protect: bool
    labels: dict[str, str]


def payload_filter(project: str, service_name: str) -> str:
    """The Logging query that selects this service's payload lines, and nothing else."""
    return (
        f'logName="projects/{project}/logs/{STDOUT_LOG}" AND '
        f'resource.type="cloud_run_revision" AND '
        f'resource.labels.service_name="{service_name}" AND '
        f'labels.{RECORD_LABEL}="{RECORD_VALUE}"'
    )


class PayloadSink(pulumi.ComponentResource):
    """The dataset, the sink into it, its writer's grant, and the _Default bucket's exclusion."""

    def __init__(self, name: str, args: PayloadSinkArgs, opts: pulumi.ResourceOptions):
        super().__init__("modelrun:gcp:PayloadSink", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.dataset = gcp.bigquery.Dataset(
            f"{name}-dataset",
            project=args.project,
            dataset_id=args.dataset_id,
            location=args.region,
            description="modelrun's payload records (a Log Router sink writes them)",
            default_partition_expiration_ms=args.retention_days * MS_PER_DAY,
            delete_contents_on_destroy=not args.protect,
            labels=args.labels,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        records = payload_filter(args.project, args.service_name)
        self.sink = gcp.logging.ProjectSink(
            name,
            project=args.project,
            name=f"{args.service_name}-payloads",
            description="modelrun's payload records, into BigQuery",
            destination=pulumi.Output.concat(
                "bigquery.googleapis.com/projects/",
                args.project,
                "/datasets/",
                self.dataset.dataset_id,
            ),
            filter=records,
            unique_writer_identity=True,
            bigquery_options=gcp.logging.ProjectSinkBigqueryOptionsArgs(
                use_partitioned_tables=True
            ),
            opts=child,
        )
        self.writer = gcp.bigquery.DatasetIamMember(
            f"{name}-writer",
            project=args.project,
            dataset_id=self.dataset.dataset_id,
            role=WRITER_ROLE,
            member=self.sink.writer_identity,
            opts=child,
        )
        # An exclusion on the _Default sink: the records are routed to BigQuery above and not
        # also ingested into the _Default bucket (sinks each see every entry; exclusions of one
        # do not hide entries from another).
        self.exclusion = gcp.logging.ProjectExclusion(
            f"{name}-not-default",
            project=args.project,
            name=f"{args.service_name}-payloads",
            description="modelrun's payload records go to BigQuery only",
            filter=records,
            opts=child,
        )
        self.dataset_ref = pulumi.Output.concat(args.project, ".", self.dataset.dataset_id)
        self.register_outputs({"dataset": self.dataset_ref})

    def grant_reader(self, name: str, member: pulumi.Input[str]) -> None:
        """Let `member` query the records (`modelrun evaluate --bigquery`): read this dataset
        alone, and run query jobs in the project (billed to it)."""
        child = pulumi.ResourceOptions(parent=self)
        gcp.bigquery.DatasetIamMember(
            f"{name}-reads-payloads",
            project=self.dataset.project,
            dataset_id=self.dataset.dataset_id,
            role="roles/bigquery.dataViewer",
            member=member,
            opts=child,
        )
        gcp.projects.IAMMember(
            f"{name}-runs-queries",
            project=self.dataset.project,
            role="roles/bigquery.jobUser",
            member=member,
            opts=child,
        )
