"""The README's curl examples, run as a reader would paste them, against the real service."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from function.store import ModelStore
from tests.conftest import ROOT, run_service

KEY = "readme-example-key-0123456789"
SECTIONS = ("Call the API", "Standard protocols: Open Inference Protocol v2 and Vertex AI")


def curl_commands() -> list[str]:
    """Every curl command of the sections above, continuation lines joined, comments dropped."""
    readme = (ROOT / "README.md").read_text()
    commands = []
    for title in SECTIONS:
        section = readme.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
        for block in re.findall(r"```bash\n(.*?)```", section, re.S):
            pending = ""
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s{2,}#.*$", "", line)  # a trailing comment
                if line.lstrip().startswith("#"):
                    continue
                pending = f"{pending} {line}" if pending else line
                if pending.count("'") % 2:  # a quoted body goes on over the next line
                    continue
                if pending.startswith("curl "):
                    commands.append(pending)
                pending = ""
    return commands


def test_every_readme_curl_example_answers_200(tmp_path: Path, iris_artifact: Path) -> None:
    store = ModelStore((tmp_path / "iris").as_uri())
    store.promote(store.publish(iris_artifact, "v1"))
    commands = curl_commands()
    assert len(commands) >= 9
    assert any("/v2/models/iris/infer" in c for c in commands)

    with run_service({"MODEL_URI": store.uri, "API_KEYS": KEY}, tmp_path) as running:
        statuses = {
            command: subprocess.run(
                ["bash", "-c", f"{command} -o /dev/null -w '%{{http_code}}'"],
                env={"KEY": KEY, "URL": running.url, "PATH": "/usr/bin:/bin"},
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
            for command in commands
        }

    assert {c: s for c, s in statuses.items() if s != "200"} == {}
