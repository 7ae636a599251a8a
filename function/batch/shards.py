"""Each task's share of the input: by file and by byte range, cut on line boundaries.

The input files, sorted by name, are laid end to end; task i of n takes the i-th of n equal byte
ranges (`task_ranges`), each file's part of it a `Range`. A line belongs to the range that holds
its first byte (the rule Hadoop's line reader follows), so every line is read by exactly one
task, whatever the task count, and a rerun of a task reads the same lines:

    file  |header\\n|row 2\\n|row 3 .......\\n|row 4\\n|row 5\\n|
    task 0 [---------------------)                       a range may end inside a line:
    task 1                       [----------------------) row 3 started in task 0's, so is its

`lines` streams a range's lines in blocks of whole lines, never holding more than a block; the
bytes it yields are exactly the lines the range owns, so their digest identifies the share.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from function.core.storage import CHUNK, Item, Storage

MAX_LINE = 64 << 20  # one line longer than this is not a row of a table


@dataclass(frozen=True)
class Range:
    """Bytes [start, end) of one input file, as a task's share."""

    item: Item
    start: int
    end: int


@dataclass
class Block:
    """Whole lines of one range: their bytes and the offset of the first."""

    data: bytes
    offset: int


def task_ranges(items: list[Item], index: int, count: int) -> list[Range]:
    """Task `index` of `count`'s byte ranges, one per file it touches (none when the input has
    fewer bytes than tasks)."""
    total = sum(i.size for i in items)
    lo, hi = total * index // count, total * (index + 1) // count
    ranges, offset = [], 0
    for item in items:
        start, end = max(lo - offset, 0), min(hi - offset, item.size)
        if start < end:
            ranges.append(Range(item, start, end))
        offset += item.size
    return ranges


class LineReader:
    """The lines of one range, in blocks; `sha256` and `span` describe what was read."""

    def __init__(self, place: Storage, piece: Range, block_bytes: int) -> None:
        self.place, self.piece, self.block_bytes = place, piece, block_bytes
        self.first = piece.start  # where the range's first line starts (found when read)
        self.last = piece.start  # where the range's last line ends
        self._digest = hashlib.sha256()

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def blocks(self) -> Iterator[Block]:
        piece = self.piece
        begin = max(piece.start - 1, 0)
        with self.place.open_at(piece.item.key, begin, piece.item.version) as stream:
            buffer, position = b"", begin
            if piece.start > 0:  # skip the line that started before the range: not ours
                buffer, position = _skip_partial_line(stream, position, self.block_bytes)
            self.first = self.last = position
            ended = False
            while position < piece.end:
                cut = piece.end - position  # the lines starting before buffer[cut] are ours
                if cut <= len(buffer) or ended:
                    stop = buffer.find(b"\n", cut - 1) if cut <= len(buffer) else -1
                    if stop >= 0 or ended:  # a last line without a newline is whole too
                        if data := buffer[: stop + 1] if stop >= 0 else buffer:
                            yield self._emit(data, position)
                        return
                stop = buffer.rfind(b"\n")
                if stop >= 0:
                    yield self._emit(buffer[: stop + 1], position)
                    position, buffer = position + stop + 1, buffer[stop + 1 :]
                elif len(buffer) > MAX_LINE:
                    raise ValueError(f"{piece.item.uri}: a line longer than {MAX_LINE} bytes")
                more = stream.read(self.block_bytes)
                ended = not more
                buffer += more

    def _emit(self, data: bytes, offset: int) -> Block:
        self._digest.update(data)
        self.last = offset + len(data)
        return Block(data, offset)


def _skip_partial_line(stream: object, position: int, size: int) -> tuple[bytes, int]:
    """Read past the first newline from `position`; return what follows it and where that is."""
    read = stream.read  # type: ignore[attr-defined]
    while True:
        data = read(size)
        if not data:
            return b"", position
        found = data.find(b"\n")
        if found >= 0:
            return data[found + 1 :], position + found + 1
        position += len(data)


def read_header(place: Storage, item: Item) -> bytes:
    """A file's first line, without its line break."""
    with place.open_at(item.key, 0, item.version) as stream:
        data = b""
        while b"\n" not in data and len(data) <= MAX_LINE:
            block = stream.read(1 << 16)
            if not block:
                break
            data += block
    return data.split(b"\n", 1)[0].rstrip(b"\r")


def lines_before(place: Storage, item: Item, offset: int) -> int:
    """How many lines a file has before `offset` (counted in blocks, nothing parsed)."""
    if offset == 0:
        return 0
    count, position = 0, 0
    with place.open_at(item.key, 0, item.version) as stream:
        while position < offset:
            data = stream.read(min(CHUNK, offset - position))
            if not data:
                break
            count += data.count(b"\n")
            position += len(data)
    return count
