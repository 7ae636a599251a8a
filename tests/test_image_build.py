"""`make image`'s own rules (local/image.py), without building: the bases it must provide, and
the pip configuration the build gets. The built image itself is tests/test_image.py's."""

from __future__ import annotations

from pathlib import Path

from local import image


def test_the_bases_are_each_dockerfiles_images_not_its_stages(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "FROM python:3.11.14-slim AS build\nRUN true\n"
        "FROM --platform=linux/amd64 debian:bookworm AS other\n"
        "FROM build\nCOPY --from=other / /\n"
    )

    assert image.bases(dockerfile) == ["python:3.11.14-slim", "debian:bookworm"]
    for context in image.IMAGES.values():  # both stages of the service's, the MLflow server's
        assert image.bases(context / "Dockerfile") == ["python:3.11.14-slim"]


def test_pip_settings_are_read_as_pip_lists_them() -> None:
    listed = (
        "global.cert='/etc/ssl/certs/ca-certificates.crt'\n"
        "global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'\n"
        ":env:.find-links='/opt/wheels'\n"
        "install.no-binary=':none:'\n"
    )

    assert image.parse_config_list(listed) == {
        "global": {
            "cert": "/etc/ssl/certs/ca-certificates.crt",
            "extra-index-url": "file:///opt/pypi/simple file:///opt/pypi-more/simple",
            "find-links": "/opt/wheels",
        },
        "install": {"no-binary": ":none:"},
    }


def test_every_local_file_pip_names_is_mounted_and_nothing_else(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "simple").mkdir(parents=True)
    (mirror / "files").mkdir()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    cert = tmp_path / "ca.pem"
    cert.write_text("")
    settings = {
        "global": {
            "cert": str(cert),
            "index-url": "https://pypi.org/simple",
            "extra-index-url": f"{(mirror / 'simple').as_uri()} file:///nowhere/simple",
            "find-links": str(wheels),
            "default-timeout": "180",
        }
    }

    # An index's pages link to files beside simple/: the mirror's root is mounted.
    assert image.local_paths(settings) == [cert, mirror, wheels]
