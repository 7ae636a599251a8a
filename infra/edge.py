"""The protected edge (modelrun:domain): the service behind Google's external Application Load
Balancer, Cloud Armor and its own domain, each part a component of its own:

    client ─▶ EdgeAddress (global IPv4) ─┬─ :443 HttpsFrontend (managed certificate, URL map) ─┐
                                         └─ :80  HttpRedirect (301 to https)                  │
                 ServerlessBackend (backend service + Cloud Armor + request logs) ◀──────────┘
                     └─▶ serverless NEG ─▶ the Cloud Run service (ingress: load balancer only)

With the edge on, the service's ingress is internal-and-cloud-load-balancing (cloud_run.py), so
its run.app URL refuses outside traffic: there is no way around the edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
from pulumi_gcp.compute import (
    BackendServiceBackendArgs,
    BackendServiceLogConfigArgs,
    ManagedSslCertificateManagedArgs,
    RegionNetworkEndpointGroupCloudRunArgs,
    SecurityPolicyAdvancedOptionsConfigArgs,
    URLMapDefaultUrlRedirectArgs,
)
from pulumi_gcp.logging import MetricMetricDescriptorArgs, MetricMetricDescriptorLabelArgs

import armor
from resource_names import Names
from stack_config import EdgeSettings

SCHEME = "EXTERNAL_MANAGED"  # the global external Application Load Balancer
# Requests Cloud Armor denied, from the load balancer's request logs (their
# jsonPayload.enforcedSecurityPolicy: "Use request logging",
# https://cloud.google.com/armor/docs/request-logging), counted by the rule's priority.
BLOCKED_FILTER = (
    'resource.type="http_load_balancer" AND jsonPayload.enforcedSecurityPolicy.outcome="DENY"'
)


@dataclass
class EdgeArgs:
    """What the edge and each of its parts use (the parts are its own: they take its Args)."""

    project: str
    region: str
    names: Names  # every part's name: names.edge(part)
    settings: EdgeSettings
    service: gcp.cloudrunv2.Service


class Edge(pulumi.ComponentResource):
    """The address, the two frontends, the protected backend, and the blocked-requests metric."""

    def __init__(self, name: str, args: EdgeArgs, opts: pulumi.ResourceOptions) -> None:
        super().__init__("modelrun:gcp:Edge", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        backend = ServerlessBackend(f"{name}-backend", args, child)
        address = EdgeAddress(f"{name}-address", args, child)
        HttpsFrontend(f"{name}-https", args, backend.service, address.address, child)
        HttpRedirect(f"{name}-http", args, address.address, child)
        self.blocked_metric = gcp.logging.Metric(
            f"{name}-blocked",
            project=args.project,
            name=args.names.edge("edge-blocked"),
            description="Requests Cloud Armor denied at the edge, by rule priority",
            filter=BLOCKED_FILTER,
            metric_descriptor=MetricMetricDescriptorArgs(
                metric_kind="DELTA",
                value_type="INT64",
                labels=[MetricMetricDescriptorLabelArgs(key="rule", value_type="STRING")],
            ),
            label_extractors={"rule": "EXTRACT(jsonPayload.enforcedSecurityPolicy.priority)"},
            opts=child,
        )
        self.address = address.address.address
        self.url = f"https://{args.settings.domain}"
        self.register_outputs({"address": self.address, "url": self.url})


class ServerlessBackend(pulumi.ComponentResource):
    """A serverless NEG for the service, behind a backend service with Cloud Armor and logs."""

    def __init__(self, name: str, args: EdgeArgs, opts: pulumi.ResourceOptions) -> None:
        super().__init__("modelrun:gcp:ServerlessBackend", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        neg = gcp.compute.RegionNetworkEndpointGroup(
            name,
            project=args.project,
            name=args.names.edge("neg"),
            region=args.region,
            network_endpoint_type="SERVERLESS",
            cloud_run=RegionNetworkEndpointGroupCloudRunArgs(service=args.service.name),
            opts=child,
        )
        self.policy = gcp.compute.SecurityPolicy(
            f"{name}-armor",
            project=args.project,
            name=args.names.edge("armor"),
            description="modelrun edge: OWASP rules, per-IP rate-based ban, allow and deny lists",
            type="CLOUD_ARMOR",
            advanced_options_config=SecurityPolicyAdvancedOptionsConfigArgs(
                json_parsing="STANDARD"
            ),
            rules=armor.rules(args.settings),
            opts=child,
        )
        self.service = gcp.compute.BackendService(
            name,
            project=args.project,
            name=args.names.edge("backend"),
            load_balancing_scheme=SCHEME,
            protocol="HTTPS",
            backends=[BackendServiceBackendArgs(group=neg.id)],
            security_policy=self.policy.self_link,
            log_config=BackendServiceLogConfigArgs(
                enable=True, sample_rate=args.settings.log_sample_rate
            ),
            opts=child,
        )
        self.register_outputs({"backend": self.service.id})


class EdgeAddress(pulumi.ComponentResource):
    """The global IPv4 address both frontends listen on: the one to put in DNS."""

    def __init__(self, name: str, args: EdgeArgs, opts: pulumi.ResourceOptions) -> None:
        super().__init__("modelrun:gcp:EdgeAddress", name, None, opts)
        self.address = gcp.compute.GlobalAddress(
            name,
            project=args.project,
            name=args.names.edge("address"),
            ip_version="IPV4",
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"address": self.address.address})


class HttpsFrontend(pulumi.ComponentResource):
    """HTTPS on 443 with a Google-managed certificate for the domain, to the backend."""

    def __init__(
        self,
        name: str,
        args: EdgeArgs,
        backend: gcp.compute.BackendService,
        address: gcp.compute.GlobalAddress,
        opts: pulumi.ResourceOptions,
    ) -> None:
        super().__init__("modelrun:gcp:HttpsFrontend", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        certificate = gcp.compute.ManagedSslCertificate(
            name,
            project=args.project,
            name=args.names.edge("certificate"),
            managed=ManagedSslCertificateManagedArgs(domains=[args.settings.domain]),
            opts=child,
        )
        url_map = gcp.compute.URLMap(
            name,
            project=args.project,
            name=args.names.edge("https"),
            default_service=backend.id,
            opts=child,
        )
        proxy = gcp.compute.TargetHttpsProxy(
            name,
            project=args.project,
            name=args.names.edge("https-proxy"),
            url_map=url_map.id,
            ssl_certificates=[certificate.id],
            opts=child,
        )
        _listen(name, args, "https-rule", 443, address, proxy, child)
        self.register_outputs({})


class HttpRedirect(pulumi.ComponentResource):
    """HTTP on 80, answered with a permanent redirect to HTTPS; nothing reaches the backend."""

    def __init__(
        self,
        name: str,
        args: EdgeArgs,
        address: gcp.compute.GlobalAddress,
        opts: pulumi.ResourceOptions,
    ) -> None:
        super().__init__("modelrun:gcp:HttpRedirect", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        url_map = gcp.compute.URLMap(
            name,
            project=args.project,
            name=args.names.edge("http-redirect"),
            default_url_redirect=URLMapDefaultUrlRedirectArgs(
                https_redirect=True,
                strip_query=False,
                redirect_response_code="MOVED_PERMANENTLY_DEFAULT",
            ),
            opts=child,
        )
        proxy = gcp.compute.TargetHttpProxy(
            name,
            project=args.project,
            name=args.names.edge("http-proxy"),
            url_map=url_map.id,
            opts=child,
        )
        _listen(name, args, "http-rule", 80, address, proxy, child)
        self.register_outputs({})


def _listen(
    name: str,
    args: EdgeArgs,
    part: str,
    port: int,
    address: gcp.compute.GlobalAddress,
    proxy: gcp.compute.TargetHttpsProxy | gcp.compute.TargetHttpProxy,
    opts: pulumi.ResourceOptions,
) -> gcp.compute.GlobalForwardingRule:
    """The forwarding rule that sends the address's `port` to a proxy."""
    return gcp.compute.GlobalForwardingRule(
        name,
        project=args.project,
        name=args.names.edge(part),
        load_balancing_scheme=SCHEME,
        ip_protocol="TCP",
        port_range=str(port),
        ip_address=address.id,
        target=proxy.id,
        opts=opts,
    )
