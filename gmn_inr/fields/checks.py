"""What every spec module checks with: the error type, bounded numbers, the size limit and the
presets' scale factors."""
from __future__ import annotations

import math

class SpecError(ValueError):
    """An architecture spec with impossible or unknown values."""


#: the most parameters a spec may imply (2^28 floats = 1 GiB; Table 7's largest field has ~0.3M and
#: an Instant-NGP hash grid 2^24): checked by ``validate`` before anything is allocated, so a crafted
#: ``arch_spec`` or tcnn config is refused instead of attempting a many-GB allocation
MAX_PARAMS = 1 << 28


def check_int(owner: str, name: str, v, lo: int, hi: int) -> int:
    """``v`` as a bounded int (bools, strings and floats with a fraction are refused by name)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        raise SpecError(f"{owner}.{name} must be an integer, got {v!r}")
    if not lo <= v <= hi:
        raise SpecError(f"{owner}.{name} must be in [{lo}, {hi}], got {v}")
    return int(v)


def check_real(owner: str, name: str, v, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        raise SpecError(f"{owner}.{name} must be a finite number in [{lo:g}, {hi:g}], got {v!r}")
    return float(v)



# -- presets ---------------------------------------------------------------------
# -- presets ----------------------------------------------------------------------
PRESETS = ("paper", "cpu", "tiny")
#: how much smaller the ``cpu`` / ``tiny`` presets make widths, resolutions and tables
PRESET_FACTOR = {"paper": 1, "cpu": 2, "tiny": 4}
