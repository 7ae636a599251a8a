"""The Google APIs the stack uses, enabled before anything that needs them."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

SERVICES = (
    "run.googleapis.com",
    "artifactregistry.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "sts.googleapis.com",
    "monitoring.googleapis.com",  # the sidecar's time series, alert policies, the dashboard
    "cloudkms.googleapis.com",  # the key that signs published models
)
SCHEDULER = "cloudscheduler.googleapis.com"  # only with modelrun:batchJobSchedule
EDGE_APIS = ("compute.googleapis.com", "logging.googleapis.com")  # only with modelrun:domain
# only with payload records on (modelrun:payloadSampleRate above 0)
PAYLOAD_APIS = ("bigquery.googleapis.com", "logging.googleapis.com")


@dataclass
class ApisArgs:
    project: str
    extra: tuple[str, ...] = ()  # SCHEDULER, EDGE_APIS: as the stack's settings need them


class Apis(pulumi.ComponentResource):
    """Enable each API once; destroying the stack leaves them enabled (others may use them)."""

    def __init__(self, name: str, args: ApisArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("modelrun:gcp:Apis", name, None, opts)
        self.services = [
            gcp.projects.Service(
                api.split(".")[0],
                project=args.project,
                service=api,
                disable_on_destroy=False,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for api in dict.fromkeys(SERVICES + args.extra)  # once each, however many ask
        ]
        self.register_outputs({"services": [s.service for s in self.services]})
