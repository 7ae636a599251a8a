"""Delivery files: the workflows refer to things that exist, and the Dockerfile runs as written.

GitHub and Docker cannot run here; actionlint and hadolint check the files (`make lint`), and
these tests check what no linter knows: that each make target, path, stack output, config key,
training verb, repository variable and action version the workflows name is real.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from local import container
from local import tracking as tracking_server
from tests.conftest import ROOT, run_service
from training.__main__ import _parser as training_parser
from training.estimators import ESTIMATORS

WORKFLOWS = ROOT / ".github" / "workflows"
ACTION_MAJORS = {
    "actions/checkout": "v5",
    "actions/setup-python": "v6",
    "google-github-actions/auth": "v3",
    "google-github-actions/setup-gcloud": "v3",
    "pulumi/actions": "v7",
    "docker/build-push-action": "v7",
    "docker/login-action": "v4",
    "docker/setup-buildx-action": "v4",
    "actions/upload-artifact": "v6",
}


def workflow(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((WORKFLOWS / name).read_text()))


def all_workflows() -> dict[str, dict[str, Any]]:
    return {path.name: workflow(path.name) for path in sorted(WORKFLOWS.glob("*.yml"))}


def steps(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in document["jobs"].values() for step in job["steps"]]


def scripts(document: dict[str, Any]) -> str:
    return "\n".join(step.get("run", "") for step in steps(document))


def test_the_four_workflows_exist() -> None:
    assert set(all_workflows()) == {"ci.yml", "deploy.yml", "train.yml", "evaluate.yml"}


def test_make_targets_named_in_workflows_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.MULTILINE))
    for name, document in all_workflows().items():
        for target in re.findall(r"\bmake ([a-z][a-z-]*)", scripts(document)):
            assert target in targets, f"{name} runs `make {target}`"


def test_paths_named_in_workflows_exist() -> None:
    for name, document in all_workflows().items():
        for step in steps(document):
            with_ = step.get("with", {})
            for key in ("context", "file"):
                if key in with_:
                    assert (ROOT / with_[key]).exists(), f"{name}: {key} {with_[key]}"
            for path in str(with_.get("cache-dependency-path", "")).split():
                assert (ROOT / path).exists(), f"{name}: {path}"
            for path in re.findall(r"bash (\S+)", step.get("run", "")):
                assert (ROOT / path).exists(), f"{name}: {path}"


def test_ci_runs_the_readme_test_command() -> None:
    assert "bash .ci/run" in scripts(workflow("ci.yml"))
    ci_run = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci_run and "make lint" in ci_run
    assert "make test" in (ROOT / "README.md").read_text()
    # The image too: built by buildah (the image test runs buildah's storage), then run.
    assert "make image IMAGE_ENGINE=buildah" in ci_run and "make test-image" in ci_run
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.MULTILINE))
    assert set(re.findall(r"^make ([a-z][a-z-]*)", ci_run, flags=re.MULTILINE)) <= targets


def test_deploy_follows_ci_by_its_name() -> None:
    trigger = workflow("deploy.yml")[True]["workflow_run"]  # YAML 1.1 reads `on` as True

    assert trigger["workflows"] == [workflow("ci.yml")["name"]]
    assert trigger["branches"] == ["main"]


def readme_section(title: str) -> str:
    return (ROOT / "README.md").read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_stack_outputs_and_config_keys_used_by_deploy_exist() -> None:
    text = scripts(workflow("deploy.yml"))
    readme = readme_section("Deploy to Google Cloud") + readme_section("Continuous deployment")
    tree = ast.parse((ROOT / "infra" / "__main__.py").read_text())
    # `outputs = {...}`, and the `outputs |= {...}` of the optional parts (edge, batch job)
    exported = {
        key.value
        for node in ast.walk(tree)
        if isinstance(node, (ast.Assign, ast.AugAssign))
        and isinstance(target := node.targets[0] if isinstance(node, ast.Assign) else node.target,
                       ast.Name)
        and target.id == "outputs"
        and isinstance(node.value, ast.Dict)
        for key in node.value.keys
        if isinstance(key, ast.Constant)
    }  # fmt: skip
    declared = set(yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"])
    declared.add("gcp:project")  # every stack sets it; a provider key cannot be declared

    used_outputs = set(re.findall(r"pulumi stack output (\w+)", text))
    used_keys = set(re.findall(r"pulumi config set ([\w:]+)", text))
    readme_outputs = set(re.findall(r"pulumi stack output (\w+)", readme))
    readme_keys = set(re.findall(r"pulumi config (?:set|get|rm) (?:--secret )?([\w:]+)", readme))
    readme_keys |= set(re.findall(r"`((?:modelrun|gcp):\w+)`", readme))

    assert used_outputs and used_outputs <= exported
    assert used_keys == {"modelrun:image"} and used_keys <= declared
    assert {"serviceUrl", "imageRepository", "apiKeySecret"} <= readme_outputs
    assert readme_outputs <= exported, readme_outputs - exported
    assert len(readme_keys) > 10
    assert readme_keys <= declared, readme_keys - declared


@pytest.mark.slow
def test_training_verbs_and_estimators_in_train_workflow_exist() -> None:
    document = workflow("train.yml")
    options = document[True]["workflow_dispatch"]["inputs"]["estimator"]["options"]
    text = scripts(document)

    assert set(options) == set(ESTIMATORS)  # the whole list, regressors included
    assert re.findall(r"-m training (\w+)", text) == ["package", "train", "train", "rollout"]
    assert "args=(publish " in text  # built as an array: the promote flag is optional
    # Each rollout the input offers is a command line the CLI accepts, with the version that
    # `publish` printed.
    rollouts = document[True]["workflow_dispatch"]["inputs"]["rollout"]["options"]
    # The step's own sed, run on what `publish` prints, with and without an MLflow run.
    sed = re.search(r"version=\$\(sed -n '([^']+)' published.txt\)", text)
    assert sed is not None
    version = "20261130T101010Z-abcdef12"
    for run in ("", " (MLflow run 739e3e7b3cb4447fb599763b193dde86)"):
        published = f"published gs://b/models/iris/versions/{version}{run}\n"
        found = subprocess.run(["sed", "-n", sed[1]], input=published, capture_output=True,
                               text=True, check=True).stdout  # fmt: skip
        assert found == f"{version}\n"
    for choice in rollouts:
        how = re.search(rf"^\s*{choice}\) how=\((.*)\) ;;$", text, re.M)
        if choice == "none":
            assert how is None
            continue
        assert how is not None, choice
        args = training_parser().parse_args(
            [
                "rollout",
                "start",
                version,
                "--store",
                "gs://b/models",
                "--name",
                "iris",
                *how[1].split(),
            ]
        )
        assert (args.shadow, args.canary) == ((100.0, None) if choice == "shadow" else (None, 10))


@pytest.mark.slow
def test_the_train_workflow_tracks_in_mlflow_only_with_a_server(tmp_path: Path) -> None:
    """The repository variable reaches the training step; the MLflow client is installed only
    then; the job summary links the run, from the metadata train writes."""
    document = workflow("train.yml")
    by_name = {step.get("name") or step.get("id"): step for step in steps(document)}
    install = by_name["Install the MLflow client"]
    token = by_name["mlflow-token"]
    train = by_name["Train (or package), evaluate and gate"]

    assert install["if"] == "vars.MLFLOW_TRACKING_URI != ''"
    assert "-r training/tracking-requirements.txt" in install["run"]
    assert token["if"].startswith("vars.MLFLOW_TRACKING_URI != ''")
    assert token["with"]["token_format"] == "id_token"
    assert token["with"]["create_credentials_file"] is False
    assert train["env"]["MLFLOW_TRACKING_URI"] == "${{ vars.MLFLOW_TRACKING_URI }}"
    assert "steps.mlflow-token.outputs.id_token" in train["env"]["MLFLOW_TRACKING_TOKEN"]
    summary = by_name["Metrics to the job summary"]["run"]
    script = re.search(r"<<'PY'[^\n]*\n(.*)\n\s*PY\s*$", summary, re.S)
    assert script is not None
    model = tmp_path / "artifacts" / "model"
    model.mkdir(parents=True)
    tracked = {
        "run_id": "abc123",
        "run_url": "http://mlflow.example/#/experiments/1/runs/abc123",
        "tracking_uri": "http://mlflow.example",
        "version": "20261130T101010Z-abcdef12",
    }
    metadata = {
        "name": "iris",
        "estimator": "LogisticRegression",
        "sha256": "f" * 64,
        "metrics": {"holdout": {"accuracy": 0.9}, "cv": {}},
        "mlflow": tracked,
    }
    (model / "metadata.json").write_text(json.dumps(metadata))
    shown = subprocess.run([sys.executable, "-c", textwrap.dedent(script[1])], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert f"MLflow run [abc123]({tracked['run_url']}), tagged modelrun.version=" in shown


def test_repository_variables_and_secrets_are_documented() -> None:
    """Every Actions variable and secret a workflow reads is a row of the README's tables."""
    tables = readme_section("Continuous deployment")
    rows = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", tables, re.M))
    used = set()
    for path in WORKFLOWS.glob("*.yml"):
        used |= set(re.findall(r"\b(?:vars|secrets)\.([A-Z0-9_]+)", path.read_text()))

    assert used
    assert used <= rows, f"not in the README's tables: {used - rows}"


def test_actions_are_current_majors() -> None:
    for name, document in all_workflows().items():
        for step in steps(document):
            if "uses" not in step:
                continue
            action, _, version = step["uses"].partition("@")
            assert ACTION_MAJORS.get(action) == version, f"{name}: {step['uses']}"


def test_permissions_are_least_by_default() -> None:
    for name, document in all_workflows().items():
        assert document["permissions"] == {"contents": "read"}, name
        for job_name, job in document["jobs"].items():
            assert "permissions" in job, f"{name}:{job_name} has no permissions block"
            assert set(job["permissions"].items()) <= {
                ("contents", "read"),
                ("id-token", "write"),
            }, f"{name}:{job_name}"
    assert "id-token" not in workflow("ci.yml")["jobs"]["lint-and-test"]["permissions"]


def test_deploys_are_serialised_and_never_cancelled() -> None:
    concurrency = workflow("deploy.yml")["concurrency"]

    assert concurrency["cancel-in-progress"] is False
    assert workflow("train.yml")["concurrency"]["cancel-in-progress"] is False


def test_no_json_keys_in_workflows() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        text = path.read_text()
        assert "credentials_json" not in text, path.name
        assert "GOOGLE_APPLICATION_CREDENTIALS" not in text, path.name


# --- the Dockerfile ----------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", [container.DOCKERFILE, tracking_server.DOCKERFILE])
def test_dockerfiles_run_as_non_root_from_a_pinned_slim_base(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    bases = re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE)
    users = re.findall(r"^USER (\S+)", text, flags=re.MULTILINE)

    assert bases and all(re.fullmatch(r"python:3\.11\.\d+-slim", b) for b in bases)
    assert users and users[-1] not in ("root", "0")
    assert "COPY requirements.txt" in text  # only its own pinned requirements


def test_image_carries_no_model_and_no_secret() -> None:
    text = container.DOCKERFILE.read_text()
    env = container.environment()

    assert ".joblib" not in text and "artifacts" not in text
    assert not [k for k in env if "KEY" in k or "SECRET" in k or "TOKEN" in k]
    assert env["PORT"] == "8080"  # Cloud Run overrides PORT; the CMD reads it, never hard-codes it
    assert '--port "${AIP_HTTP_PORT:-${PORT:-8080}}"' in container.command()[-1]


def test_dockerfile_command_is_what_the_service_tests_run() -> None:
    from tests.conftest import SERVE_COMMAND

    assert container.command() == SERVE_COMMAND
    assert container.command()[:2] == ["sh", "-c"]
    assert container.command()[2].startswith("exec python -m function.service.server ")


@pytest.mark.slow
def test_a_typo_in_the_dockerfile_command_fails_here(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text(
        container.DOCKERFILE.read_text().replace(
            "-m function.service.server ", "-m function.sever "
        )
    )

    with (
        pytest.raises(AssertionError, match="the service exited"),
        run_service(
            {"MODEL_URI": "file:///nowhere/iris", "ENVIRONMENT": "development"},
            tmp_path,
            command=container.command(broken),
        ),
    ):
        pass


def test_dockerignore_keeps_caches_out() -> None:
    ignored = (ROOT / "function" / ".dockerignore").read_text()

    assert "__pycache__" in ignored


def test_readme_deploy_commands_name_the_project() -> None:
    """Every gcloud call of the deploy path says which project (a laptop's default project is
    rarely the stack's); only `gcloud auth` commands have none to name, and `gcloud projects
    VERB $PROJECT` names it as its argument."""
    section = readme_section("Deploy to Google Cloud") + readme_section("Continuous deployment")
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    commands = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    gcloud = [c for c in commands if re.search(r"(^|\$\(|\s)gcloud ", c)]

    assert len(gcloud) >= 8
    for command in gcloud:
        for call in re.findall(r"gcloud [^)|;]*", command):
            if call.startswith("gcloud auth "):
                continue
            if re.match(r"gcloud projects [\w-]+ \$PROJECT\b", call):  # named as the argument
                continue
            assert "--project" in call, call


@pytest.mark.slow
def test_make_clean_keeps_published_models_and_the_dev_key() -> None:
    dry_run = subprocess.run(
        ["make", "-n", "clean"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout

    assert "rm -rf" in dry_run
    assert ".modelrun" not in dry_run


@pytest.mark.slow
def test_clean_store_deletes_only_when_confirmed(tmp_path: Path) -> None:
    version = tmp_path / ".modelrun" / "store" / "iris" / "versions" / "v1"
    version.mkdir(parents=True)
    make = ["make", "-s", "-f", str(ROOT / "Makefile"), "-C", str(tmp_path), "clean-store"]

    refused = subprocess.run(make, capture_output=True, text=True)
    assert refused.returncode != 0
    assert "iris/versions/v1" in refused.stdout and "CONFIRM=yes" in refused.stdout
    assert version.is_dir()

    subprocess.run([*make, "CONFIRM=yes"], capture_output=True, check=True)
    assert not (tmp_path / ".modelrun").exists()


def test_every_compose_call_goes_through_one_variable() -> None:
    makefile = (ROOT / "Makefile").read_text()

    assert "$(COMPOSE) " in makefile
    targets = makefile.split("\n.PHONY:", 1)[1]  # past the variables that find Compose
    recipes = [line for line in targets.splitlines() if line.startswith("\t")]
    assert not [r for r in recipes if re.search(r"docker[ -]compose ", r)]


def test_the_readmes_buildah_run_line_is_the_images_command() -> None:
    """The README shows how to run the built image by hand: its command after `--` is the
    Dockerfile's CMD, word for word."""
    import shlex

    readme = (ROOT / "README.md").read_text()
    (line,) = [x.strip() for x in readme.splitlines() if x.strip().startswith("sh -c 'exec ")]
    assert shlex.split(line) == container.command()
