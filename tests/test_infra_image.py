"""The Pulumi program under Pulumi's mocks (tests/support/infra.py): image continuity
(docs/ARCHITECTURE.md): an `up` without an image keeps the deployed one."""

from __future__ import annotations

import re

from tests.support.infra import (
    IMAGE,
    ROOT,
    at_path,
    planned_inputs,
    run_program,
    stack_config,
)


def test_without_an_image_the_first_up_runs_the_placeholder() -> None:
    stack = run_program(stack_config())

    service = stack.one("gcp:cloudrunv2/service:Service")
    assert at_path(service.inputs, "template.containers[0].image") == (
        "us-docker.pkg.dev/cloudrun/container/hello"
    )
    assert service.ignore_changes == ["template.containers[0].image"]


def test_an_up_without_an_image_keeps_the_deployed_one() -> None:
    # CI's deploy: `pulumi config set modelrun:image IMAGE` in its checkout, then `pulumi up`.
    deployed = run_program(stack_config(**{"modelrun:image": IMAGE}))
    service = deployed.one("gcp:cloudrunv2/service:Service")
    assert service.ignore_changes == []  # a given image is always applied
    state = service.inputs

    # An administrator's later `pulumi up` from a checkout where modelrun:image is unset,
    # changing something else.
    later = run_program(stack_config(**{"modelrun:maxInstances": "7"}))
    planned = planned_inputs(state, later.one("gcp:cloudrunv2/service:Service"))

    assert at_path(planned, "template.containers[0].image") == IMAGE
    assert planned["template"]["scaling"]["maxInstanceCount"] == 7  # the rest does change
    assert deployed.outputs["image"] == IMAGE


def test_a_new_image_replaces_the_deployed_one() -> None:
    old = run_program(stack_config(**{"modelrun:image": IMAGE}))
    newer = IMAGE.replace("a" * 64, "b" * 64)

    later = run_program(stack_config(**{"modelrun:image": newer}))
    planned = planned_inputs(
        old.one("gcp:cloudrunv2/service:Service").inputs,
        later.one("gcp:cloudrunv2/service:Service"),
    )

    assert at_path(planned, "template.containers[0].image") == newer


# What a `gcloud builds submit` of the image needs of the account it runs as (Google's "Custom
# Service Account for Cloud Build"): its log, its uploaded source, and the push.
BUILD_ROLES = (
    "roles/logging.logWriter",
    "roles/storage.objectViewer",
    "roles/artifactregistry.writer",
)


def test_the_first_image_steps_say_which_roles_cloud_build_needs() -> None:
    readme = (ROOT / "README.md").read_text()
    deploy = readme.split("\n## Deploy to Google Cloud\n", 1)[1].split("\n## ", 1)[0]
    note = deploy.split("If step 7's build fails", 1)[1].split("\nWhat `pulumi up` creates", 1)[0]

    granted = re.findall(r"add-iam-policy-binding.*?--role (\S+)", note.replace("\\\n", " "))

    assert "gcloud builds submit" in deploy
    assert "-compute@developer.gserviceaccount.com" in note  # the account new projects use
    assert sorted(granted) == sorted(BUILD_ROLES)


def test_the_mlflow_on_cloud_run_recipe_sends_traffic_where_the_server_listens() -> None:
    # Cloud Run sends requests to 8080 unless the service names another port ("Container runtime
    # contract": "By default, requests are sent to 8080, but you can configure Cloud Run to send
    # requests to the port of your choice").
    readme = (ROOT / "README.md").read_text()
    recipe = readme.split("**Running MLflow on Cloud Run.**", 1)[1].split("\n### ", 1)[0]
    (command,) = re.findall(r"```bash\n(gcloud run deploy mlflow.*?)```", recipe, re.S)
    dockerfile = (ROOT / "local" / "mlflow" / "Dockerfile").read_text()

    cloud_run_port = re.search(r"--port (\d+)", command)
    server_port = re.search(r'--args "[^"]*--port,(\d+)', command)
    image_port = re.search(r'"--port", "(\d+)"', dockerfile)

    assert cloud_run_port and server_port and image_port
    assert cloud_run_port.group(1) == server_port.group(1) == image_port.group(1)
    assert "--host,0.0.0.0" in command  # the ingress container listens on every address
