"""The Pulumi program under Pulumi's mocks, for the tests of infra/ (tests/test_infra_*.py,
tests/test_cloud_*.py, tests/test_metrics_sidecar.py).

The Pulumi CLI and the GCP provider plugin cannot run here, so the engine is replaced by
pulumi.runtime's mock monitor (the official unit-test path). The program itself, its config
reading and every resource's resolved inputs are real.

This is the one place tests load infra/: the program as the language host runs it
(`run_program`), and a module of it by its top-level name (`infra_module`); no test touches
sys.path itself.
"""

from __future__ import annotations

import importlib
import json
import re
import runpy
import sys
from dataclasses import dataclass, field
from typing import Any

import pulumi
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pulumi.runtime.mocks import MockMonitor

from tests.conftest import ROOT
from tests.pulumi_rules import MergedConfig, StackValue, load_project, load_stack, merge

INFRA = ROOT / "infra"
PROJECT = "my-modelrun-dev"
REPOSITORY = "my-org/modelrun"
OWNER_ID = "123456789"
EDGE_ADDRESS = "203.0.113.7"  # what GCP would allocate (documentation range)
# The signing key's public key, as Cloud KMS would give it (a fresh P-256 key's).
PUBLIC_KEY_PEM = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
# The batch job on: the stack the batch job's tests (and the signing key's) run.
BATCH = {"modelrun:batchJob": "true"}


@dataclass
class Registered:
    """One resource as the engine saw it."""

    type: str
    name: str
    inputs: dict[str, Any]
    urn: str
    parent: str
    dependencies: list[str]
    protect: bool
    ignore_changes: list[str] = field(default_factory=list)


@dataclass
class Stack:
    resources: list[Registered]
    outputs: dict[str, Any]
    secret_outputs: set[str] = field(default_factory=set)
    invokes: list[str] = field(default_factory=list)  # the data sources the program read

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.type == typ]

    def one(self, typ: str, name: str | None = None) -> Registered:
        found = [r for r in self.of_type(typ) if name is None or r.name == name]
        assert len(found) == 1, f"expected one {typ} {name or ''}, found {len(found)}"
        return found[0]


class Mocks(pulumi.runtime.Mocks):
    """Return each resource's inputs plus the attributes GCP would compute; note each data
    source the program reads (every `up` reads them again, with the runner's credentials)."""

    def __init__(self) -> None:
        super().__init__()
        self.invokes: list[str] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        state = dict(args.inputs)
        short = args.typ.split(":")[-1]
        if short == "Account":
            state["email"] = f"{args.inputs['accountId']}@{PROJECT}.iam.gserviceaccount.com"
            state["name"] = f"projects/{PROJECT}/serviceAccounts/{state['email']}"
            # The provider's own output: "the identity of the service account in the form
            # serviceAccount:{email}" (pulumi_gcp.serviceaccount.Account.member).
            state["member"] = f"serviceAccount:{state['email']}"
        elif short == "Secret":
            state["name"] = f"projects/123/secrets/{args.inputs['secretId']}"
            return f"projects/{PROJECT}/secrets/{args.inputs['secretId']}", state
        elif short == "Service" and "cloudrunv2" in args.typ:
            name = args.inputs["name"]
            state["uri"] = f"https://{name}-abc-ew.a.run.app"
            state["latestReadyRevision"] = (
                f"projects/{PROJECT}/locations/europe-west1/services/{name}/revisions/{name}-00002-xyz"
            )
        elif short == "WorkloadIdentityPool":
            state["name"] = (
                f"projects/123/locations/global/workloadIdentityPools/{args.inputs['workloadIdentityPoolId']}"
            )
        elif short == "WorkloadIdentityPoolProvider":
            state["name"] = (
                f"projects/123/locations/global/workloadIdentityPools/"
                f"{args.inputs['workloadIdentityPoolId']}/providers/"
                f"{args.inputs['workloadIdentityPoolProviderId']}"
            )
        elif short == "RandomPassword":
            state["result"] = "generated-key-" + "x" * 26
        elif short == "GlobalAddress":
            state["address"] = EDGE_ADDRESS
        elif short == "ProjectSink":
            # The identity Cloud Logging makes for a sink with unique_writer_identity.
            state["writerIdentity"] = (
                "serviceAccount:service-123@gcp-sa-logging.iam.gserviceaccount.com"
            )
        elif short == "SecurityPolicy":
            state["selfLink"] = f"https://www.googleapis.com/compute/v1/{args.name}"
        return f"{args.name}-id", state

    def call(
        self, args: pulumi.runtime.MockCallArgs
    ) -> tuple[dict[str, Any], list[Any]] | dict[str, Any]:
        self.invokes.append(args.token)
        if args.token == "gcp:storage/getProjectServiceAccount:getProjectServiceAccount":
            return {"emailAddress": "service-123@gs-project-accounts.iam.gserviceaccount.com"}
        if args.token == "gcp:organizations/getProject:getProject":
            return {"number": "123", "projectId": args.args.get("projectId")}
        if args.token == "gcp:kms/getKMSCryptoKeyVersion:getKMSCryptoKeyVersion":
            return {"publicKeys": [{"algorithm": "EC_SIGN_P256_SHA256", "pem": PUBLIC_KEY_PEM}]}
        return {}


class RecordingMonitor(MockMonitor):
    """The mock monitor, also keeping what only the request carries: parent, depends_on, protect."""

    def __init__(self, mocks: Mocks) -> None:
        super().__init__(mocks)
        self.requests: dict[str, Any] = {}

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        self.requests[response.urn] = request
        return response


def stack_config(
    stack: str = "dev", secrets: dict[str, str] | None = None, **changes: Any
) -> MergedConfig:
    """The configuration the Pulumi CLI would hand the program: Pulumi.yaml's defaults merged
    with the example stack file (Pulumi.dev.yaml), plus `changes` set on the stack as
    `pulumi config set` would (a list or a dict as `--path` would), and `secrets` as
    `pulumi config set --secret` would. A file or a
    change the CLI would refuse raises its error (tests/pulumi_rules.py)."""
    project = load_project((ROOT / "Pulumi.yaml").read_text())
    values = load_stack(project, (ROOT / "Pulumi.dev.yaml").read_text())
    values.update(
        {
            key: StackValue(json.dumps(value), is_object=True)
            if isinstance(value, (list, dict))
            else StackValue(value)
            for key, value in changes.items()
        }
    )
    values.update({key: StackValue("v1:encrypted", secure=True) for key in secrets or {}})
    return merge(stack, project, values, decrypt=secrets)


def run_program(config: MergedConfig, stack: str = "dev") -> Stack:
    """Run infra/__main__.py under mocks with this config; return what it declared."""
    mocks = Mocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="modelrun", stack=stack, preview=False, monitor=monitor)
    pulumi.runtime.set_all_config(config.values, config.secret_keys)
    namespace: dict[str, Any] = {}
    secret: set[str] = set()

    @pulumi.runtime.test
    def program() -> pulumi.Output[Any]:
        # As the language host runs Pulumi.yaml's `main: infra/`: run_path on the folder puts it
        # first on sys.path for the run and executes its __main__.py as __main__.
        namespace.update(runpy.run_path(str(INFRA), run_name="__main__"))
        outputs = namespace["outputs"]

        def note_secrets(name: str, output: pulumi.Output[Any]) -> pulumi.Output[Any]:
            return pulumi.Output.from_input(output.is_secret()).apply(
                lambda is_secret: secret.add(name) if is_secret else None
            )

        return pulumi.Output.all(
            pulumi.Output.all(**outputs).apply(lambda v: namespace.update(resolved=v)),
            *[note_secrets(k, pulumi.Output.from_input(v)) for k, v in outputs.items()],
        )

    program()
    resources = []
    for urn, registration in monitor.resources.items():
        request = monitor.requests[urn]
        resources.append(
            Registered(
                type=request.type,
                name=request.name,
                inputs=registration.state,
                urn=urn,
                parent=request.parent,
                dependencies=list(request.dependencies),
                protect=request.protect,
                ignore_changes=list(request.ignoreChanges),
            )
        )
    return Stack(resources, namespace["resolved"], secret, mocks.invokes)


def infra_module(name: str) -> Any:
    """Import one of infra/'s modules by its top-level name, as the program imports it (infra/
    on sys.path, as the language host puts it there: for the import only)."""
    sys.path.insert(0, str(INFRA))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(INFRA))


IAM_MEMBER_TYPES = re.compile(r"IAMMember$|IamMember$")


def iam_members(stack: Stack) -> list[Registered]:
    return [r for r in stack.resources if IAM_MEMBER_TYPES.search(r.type)]


def account_email(stack: Stack, suffix: str) -> str:
    emails = [r.inputs["email"] for r in stack.of_type("gcp:serviceaccount/account:Account")]
    return next(e for e in emails if e.split("@")[0].endswith(suffix))


SERVICE = "gcp:cloudrunv2/service:Service"


def container(stack: Stack) -> dict[str, Any]:
    return stack.one(SERVICE).inputs["template"]["containers"][0]


IMAGE = "europe-west1-docker.pkg.dev/my-modelrun-dev/modelrun-dev/modelrun@sha256:" + "a" * 64


def at_path(value: Any, path: str) -> Any:
    """Follow a Pulumi property path (`template.containers[0].image`) into resource inputs."""
    for name, index in re.findall(r"(\w+)(?:\[(\d+)\])?", path):
        value = value[name]
        if index:
            value = value[int(index)]
    return value


def planned_inputs(old: dict[str, Any], new: Registered) -> dict[str, Any]:
    """The inputs the engine sends on an update: the program's, except that every path in
    ignoreChanges keeps the value from the stack's state. This is the documented rule
    (https://www.pulumi.com/docs/iac/concepts/options/ignorechanges/): "Pulumi ignores a
    property by using the old value from the state instead of the value provided by the
    Pulumi program ... Ignored properties will still be used from the program when there is no
    previous value in the state, most importantly when creating the resource." The engine
    itself cannot run here; this applies its rule to what the program really registered."""
    inputs = json.loads(json.dumps(new.inputs))
    for path in new.ignore_changes:
        *parents, last = re.findall(r"(\w+)(?:\[(\d+)\])?", path)
        target = inputs
        for name, index in parents:
            target = target[name][int(index)] if index else target[name]
        name, index = last
        old_value = at_path(old, path)
        if index:
            target[name][int(index)] = old_value
        else:
            target[name] = old_value
    return inputs
