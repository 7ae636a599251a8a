"""`make image`: build the service's image (function/Dockerfile) and the MLflow server's
(local/mlflow/Dockerfile) with Docker where a daemon answers, else with buildah.

buildah runs without a daemon or root's cgroups (`--isolation chroot`, `--storage-driver vfs`),
which is what CI here has. When a Dockerfile's base is neither in buildah's storage nor pullable,
a stand-in is made from Debian packages (`mmdebstrap`) and tagged with the base's name: not the
real base (README, "Testing", says how it differs), but enough to prove that the Dockerfile builds
and that what it builds serves. The stand-in is cached under a name derived from everything it is
made of (`STANDIN`), so a machine makes it once. pip inside the build reaches the registry through
this machine's own pip configuration, mounted read-only (`pip_mounts`).

Stdlib only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import ast
import configparser
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parent.parent
# The images `make image` builds: name → build context (the Dockerfile in it).
IMAGES = {"modelrun": ROOT / "function", "modelrun-mlflow": ROOT / "local" / "mlflow"}
BUILDAH = ["buildah", "--storage-driver", "vfs"]  # vfs: no overlay mounts needed, any kernel

# The stand-in: Debian bookworm's Python 3.11 (the real base's minor version; bookworm is the last
# Debian release with 3.11, while python:3.11.14-slim is built on trixie, Debian 13), and what
# python:3.11.14-slim gives a Dockerfile beyond the packages: a `python` command, pip
# allowed to install into the system Python (no PEP 668 marker, as in the official image; the
# MLflow image installs there), its PATH and LANG, and its CMD.
STANDIN_SUITE = "bookworm"
STANDIN_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
STANDIN_SETUP = "ln -sf python3 /usr/bin/python && rm -f /usr/lib/python3.*/EXTERNALLY-MANAGED"
STANDIN_CONFIG = (
    "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "--env", "LANG=C.UTF-8",
    "--cmd", "python3",
)  # fmt: skip
STANDIN_LABEL = "modelrun.standin"

# pip settings whose values may name files or folders on this machine (a CA bundle, a
# constraints file, a local index or wheel folder): each one that exists is mounted too.
PATH_SETTINGS = {"cert", "client-cert", "constraint", "find-links", "index-url", "extra-index-url"}


class ImageError(RuntimeError):
    """A build that cannot go on; the message says what to do."""


def standin_key() -> str:
    """What the stand-in is made of, as a short digest: its cache key and its tag."""
    recipe = [STANDIN_SUITE, "minbase", STANDIN_PACKAGES, STANDIN_SETUP, STANDIN_CONFIG]
    return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:12]


def standin_name() -> str:
    return f"localhost/modelrun-standin:{standin_key()}"


def bases(dockerfile: Path) -> list[str]:
    """The images a Dockerfile's stages start FROM (a stage named earlier is not an image)."""
    stages: set[str] = set()
    found: list[str] = []
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if len(words) < 2 or words[0].upper() != "FROM":
            continue
        image = next(w for w in words[1:] if not w.startswith("--"))
        if image not in stages and image not in found:
            found.append(image)
        if len(words) >= 4 and words[-2].upper() == "AS":
            stages.add(words[-1])
    return found


def docker_answers() -> bool:
    """Whether a Docker daemon answers (a docker client alone is not enough)."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def run(args: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command, its output shown; fail with the command named."""
    result: subprocess.CompletedProcess[str] = subprocess.run(
        list(args), text=True, check=False, **kwargs
    )  # type: ignore[call-overload]
    if result.returncode != 0:
        raise ImageError(f"{' '.join(args)} exited {result.returncode}")
    return result


def inspect(name: str) -> dict[str, object] | None:
    """buildah's description of a local image, or None when storage has no such image."""
    result = subprocess.run(
        [*BUILDAH, "inspect", "--type", "image", name], capture_output=True, text=True
    )
    return json.loads(result.stdout) if result.returncode == 0 else None


def labels(description: dict[str, object]) -> dict[str, str]:
    config = description.get("OCIv1", {})
    assert isinstance(config, dict)
    return dict(config.get("config", {}).get("Labels") or {})


def make_standin() -> str:
    """The stand-in base, made unless storage already holds this recipe's; return its name."""
    name = standin_name()
    if inspect(name) is not None:
        return name
    for tool in ("mmdebstrap", "buildah"):
        if shutil.which(tool) is None:
            raise ImageError(f"{tool} is missing: apt-get install buildah mmdebstrap")
    print(f"making the stand-in base {name} from Debian {STANDIN_SUITE} packages", flush=True)
    with tempfile.TemporaryDirectory(prefix="modelrun-standin-") as tmp:
        tar = Path(tmp) / "rootfs.tar"
        run(["mmdebstrap", "--quiet", "--variant=minbase",
             f"--include={','.join(STANDIN_PACKAGES)}", STANDIN_SUITE, str(tar)])  # fmt: skip
        container = run([*BUILDAH, "from", "scratch"], capture_output=True).stdout.strip()
        try:
            run([*BUILDAH, "add", "--quiet", container, str(tar), "/"])
            run([*BUILDAH, "run", "--isolation", "chroot", container, "--", "sh", "-c",
                 STANDIN_SETUP])  # fmt: skip
            run([*BUILDAH, "config", *STANDIN_CONFIG,
                 "--label", f"{STANDIN_LABEL}={standin_key()}", container])  # fmt: skip
            run([*BUILDAH, "commit", "--quiet", container, name], capture_output=True)
        finally:
            subprocess.run([*BUILDAH, "rm", container], capture_output=True)
    return name


def ensure_base(name: str) -> str:
    """Have `name` in buildah's storage: as found, else pulled, else the stand-in tagged with
    it. Return which ("found", "pulled", "stand-in")."""
    found = inspect(name)
    if found is not None and labels(found).get(STANDIN_LABEL) in (None, standin_key()):
        return "stand-in" if STANDIN_LABEL in labels(found) else "found"
    pulled = subprocess.run([*BUILDAH, "pull", "--quiet", name], capture_output=True, text=True)
    if pulled.returncode == 0:
        return "pulled"
    why = (pulled.stderr.strip().splitlines() or ["no reason given"])[-1]
    print(f"{name} cannot be pulled here ({why}); a stand-in from Debian packages takes its name",
          flush=True)  # fmt: skip
    run([*BUILDAH, "tag", make_standin(), name])
    return "stand-in"


def pip_settings(python: str = sys.executable) -> dict[str, dict[str, str]]:
    """This machine's pip configuration as pip itself merges it (files and PIP_* variables), by
    section: `pip config list` prints each setting as section.key=repr(value)."""
    listed = subprocess.run([python, "-m", "pip", "config", "list"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    return parse_config_list(listed)


def parse_config_list(listed: str) -> dict[str, dict[str, str]]:
    """`pip config list`'s lines by section; a PIP_* variable (`:env:.key`) goes to global."""
    sections: dict[str, dict[str, str]] = {}
    for line in listed.splitlines():
        name, sep, value = line.partition("=")
        if not sep:
            continue
        section, _, key = name.rpartition(".")
        section = "global" if section in (":env:", "") else section  # a PIP_* variable
        sections.setdefault(section, {})[key] = ast.literal_eval(value)
    return sections


def local_paths(sections: dict[str, dict[str, str]]) -> list[Path]:
    """Files and folders on this machine that pip's settings name."""
    paths: list[Path] = []
    for settings in sections.values():
        for key, value in settings.items():
            if key not in PATH_SETTINGS:
                continue
            for word in value.split():
                path = Path(unquote(urlparse(word).path)) if word.startswith("file:") else None
                path = path or (Path(word) if word.startswith("/") else None)
                if path is not None and key.endswith("index-url") and path.name == "simple":
                    path = path.parent  # a mirror's simple/ pages link to its files beside them
                if path is not None and path.exists() and path not in paths:
                    paths.append(path)
    return paths


def pip_mounts(folder: Path, python: str = sys.executable) -> list[str]:
    """`-v` options that give pip inside the build this machine's pip configuration: one
    pip.conf written from it (at /etc/pip.conf, which every pip reads), and every file or
    folder it names at the same path, all read-only."""
    sections = pip_settings(python)
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_dict(sections)
    conf = folder / "pip.conf"
    with open(conf, "w") as out:
        parser.write(out)
    conf.chmod(0o644)
    mounts = [f"{conf}:/etc/pip.conf:ro"]
    mounts += [f"{path}:{path}:ro" for path in local_paths(sections)]
    return [option for mount in mounts for option in ("-v", mount)]


def build(engine: str, name: str, context: Path) -> None:
    """Build one image from its context's Dockerfile."""
    if engine == "docker":
        run(["docker", "build", "-t", name, str(context)])
        return
    for base in bases(context / "Dockerfile"):
        print(f"base {base}: {ensure_base(base)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="modelrun-pip-") as tmp:
        Path(tmp).chmod(0o755)
        # --pull=false: the base ensured above is not looked up in a registry again;
        # --force-rm: a failed build leaves no working container behind in the shared storage.
        run([*BUILDAH, "bud", "--isolation", "chroot", "--network", "host", "--pull=false",
             "--force-rm", "--layers", *pip_mounts(Path(tmp)), "-t", f"localhost/{name}",
             str(context)])  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.image", description=__doc__)
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"{', '.join(IMAGES)} (default: both)"
    )
    parser.add_argument(
        "--engine",
        choices=["auto", "docker", "buildah"],
        default="auto",
        help="auto: Docker where a daemon answers, else buildah. The image test runs buildah, "
        "so `make test-image` builds into buildah's storage",
    )
    args = parser.parse_args(argv)
    if unknown := set(args.names) - set(IMAGES):
        parser.error(
            f"no image named {', '.join(sorted(unknown))}; choose from {', '.join(IMAGES)}"
        )
    engine: str | None = args.engine
    if engine == "auto":
        engine = "docker" if docker_answers() else "buildah" if shutil.which("buildah") else None
    if engine is None or shutil.which(engine) is None:
        print("no Docker daemon and no buildah: install Docker, or apt-get install buildah "
              "mmdebstrap", file=sys.stderr)  # fmt: skip
        return 1
    try:
        for name in args.names or IMAGES:
            started = time.monotonic()
            build(engine, name, IMAGES[name])
            print(f"{name}: built with {engine} in {time.monotonic() - started:.0f} s", flush=True)
    except ImageError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
