"""Where a value sits in a request body: a path of keys and indices, rendered once.

    Location.of("inputs").at(0).key("data").at(3)   # inputs[0].data[3]

Errors name their field with one (`InvalidInput(..., field=str(where))`): the path is built from
the parts the parser walked, never by formatting or splitting strings.
"""

from __future__ import annotations

from dataclasses import dataclass


class Label(str):
    """An index named in words rather than a number: [row 3], [*]."""


Step = str | int | Label  # a key (.name), an index ([0]), or a labelled index ([*])


@dataclass(frozen=True)
class Location:
    steps: tuple[Step, ...] = ()

    @classmethod
    def of(cls, key: str) -> Location:
        """The location of a top-level key."""
        return cls((key,))

    def key(self, name: str) -> Location:
        """The location of an object's member."""
        return Location((*self.steps, name))

    def at(self, index: int | Label) -> Location:
        """The location of a list's element."""
        return Location((*self.steps, index))

    def __str__(self) -> str:
        parts: list[str] = []
        for step in self.steps:
            if isinstance(step, int | Label):
                parts.append(f"[{step}]")
            else:
                parts.append(f".{step}" if parts else step)
        return "".join(parts)
