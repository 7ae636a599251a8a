"""The packages a requirements file pins, by the names they are imported under: to check that
serving, training and the batch job need none of the development packages."""

from __future__ import annotations

from pathlib import Path

# Import names that differ from the distribution's name.
IMPORT_NAMES = {
    "PyYAML": "yaml",
    "python-rapidjson": "rapidjson",
    "pyrate-limiter": "pyrate_limiter",
}


def requirement_names(path: Path) -> set[str]:
    """Distribution names pinned in a requirements file and the files it includes."""
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            names |= requirement_names(path.parent / line[3:].strip())
        elif line:
            names.add(line.split("==")[0].strip())
    return names
