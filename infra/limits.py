"""Cloud Run's admission rules for an instance's size, checked when the stack is read.

Cloud Run refuses a revision that breaks these, after `pulumi up` has started changing things;
here they fail before anything is planned, naming the setting. Source: "Configure CPU limits for
services" (https://cloud.google.com/run/docs/configuring/services/cpu) and "Configure memory
limits for services" (https://cloud.google.com/run/docs/configuring/services/memory-limits):

- vCPU: any value from 0.08 to 1 in steps of 0.001; above 1, whole numbers up to 8.
- memory: at most 32 GiB; above 4 GiB needs 2 vCPU, above 8 GiB 4, above 16 GiB 6, above 24 GiB 8;
  4 vCPU need at least 2 GiB, 6 and 8 vCPU at least 4 GiB; at least 512 MiB in the second
  generation execution environment (128 MiB in the first).
- below 1 vCPU: more than 512 MiB needs 0.5 vCPU, more than 1 GiB needs 1 vCPU; concurrency must
  be 1; billing must be request-based; the first generation execution environment.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

MEMORY_PATTERN = re.compile(r"^([0-9]+)(Mi|Gi|M|G)$")
MEMORY_UNITS_MIB = {"Mi": 1.0, "Gi": 1024.0, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
GIB = 1024
# More than this much memory (MiB) needs at least this many vCPUs.
MEMORY_NEEDS_CPU = ((24 * GIB, 8), (16 * GIB, 6), (8 * GIB, 4), (4 * GIB, 2), (GIB, 1), (512, 0.5))
CPU_NEEDS_MEMORY = {4: 2 * GIB, 6: 4 * GIB, 8: 4 * GIB}  # vCPUs -> least memory (MiB)


@dataclass(frozen=True)
class InstanceSize:
    """An instance's size as Cloud Run admits it."""

    cpu: float  # vCPUs
    memory_mib: float
    concurrency: int

    @property
    def first_generation(self) -> bool:
        """Below 1 vCPU Cloud Run requires the first generation execution environment."""
        return self.cpu < 1

    @property
    def workers(self) -> int:
        """Worker processes: one per whole vCPU (Python runs on one core per process)."""
        return max(1, int(self.cpu))

    @property
    def threads(self) -> int:
        """Threads per worker, so that the workers together hold `concurrency` requests."""
        return math.ceil(self.concurrency / self.workers)


def instance_size(cpu: str, memory: str, concurrency: int) -> InstanceSize:
    """Parse modelrun:cpu, modelrun:memory and modelrun:concurrency; refuse what Cloud Run would."""
    vcpus = _cpu(cpu)
    mib = _memory(memory)
    if not 1 <= concurrency <= 1000:
        raise ValueError(f"modelrun:concurrency must be 1..1000, got {concurrency}")
    for above, needs in MEMORY_NEEDS_CPU:
        if mib > above and vcpus < needs:
            raise ValueError(
                f"modelrun:memory {memory} needs modelrun:cpu of at least {needs:g}, got {cpu}"
            )
    if mib > 32 * GIB:
        raise ValueError(f"modelrun:memory may be at most 32Gi, got {memory}")
    if vcpus < 1:
        least = 128  # the first generation's least
    else:
        least = max([512] + [m for c, m in CPU_NEEDS_MEMORY.items() if c <= vcpus])
    if mib < least:
        raise ValueError(
            f"modelrun:memory must be at least {least:g}Mi with modelrun:cpu {cpu}, got {memory}"
        )
    if vcpus < 1 and concurrency != 1:
        raise ValueError(
            f"modelrun:cpu below 1 ({cpu}) requires modelrun:concurrency 1, got {concurrency}"
        )
    return InstanceSize(vcpus, mib, concurrency)


def _cpu(text: str) -> float:
    try:
        value = Decimal(text[:-1]) / 1000 if text.endswith("m") else Decimal(text)
        if not value.is_finite():
            raise InvalidOperation
    except InvalidOperation:
        raise ValueError(
            f"modelrun:cpu must be a number of vCPUs like 1, 2 or 0.5 (or millicores, 500m), "
            f"got {text!r}"
        ) from None
    if value < 1:
        if value < Decimal("0.08") or value != value.quantize(Decimal("0.001")):
            raise ValueError(
                f"modelrun:cpu below 1 must be from 0.08 in steps of 0.001, got {text!r}"
            )
    elif value != value.to_integral_value() or value > 8:
        raise ValueError(f"modelrun:cpu above 1 must be a whole number up to 8, got {text!r}")
    return float(value)


def _memory(text: str) -> float:
    match = MEMORY_PATTERN.match(text)
    if not match:
        raise ValueError(f"modelrun:memory must be like 512Mi, 1Gi or 2G, got {text!r}")
    return int(match.group(1)) * MEMORY_UNITS_MIB[match.group(2)]
