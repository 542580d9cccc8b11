"""The transformers and peft releases fastpeft is tested with, and a check against them.

fastpeft patches PEFT layers and, for prefix tuning on M-RoPE models, calls into transformers'
model code; both change between releases (transformers 5.24 renamed the forward's
`past_key_values` to `cache`, for one). CI runs the suite with the newest releases pip picks and
the model-integration tests with the oldest pair below (`.ci/run`). Outside this range fastpeft
still runs, checking what it relies on at `patch()` time, but the combination is untested, so
`fastpeft env` says so.
"""

from __future__ import annotations

import importlib.metadata
import re

#: package -> (oldest tested, newest tested). The oldest pair is what CI's second step installs:
#: transformers 5.17 is the oldest release of the 5 series checked here (the GPU image has it);
#: peft 0.19 is the first to pass `position_ids` through prefix tuning (0.18 drops them), which
#: the unpatched reference of the prefix tests needs.
TESTED: dict[str, tuple[str, str]] = {
    "transformers": ("5.17.0", "5.24.0"),
    "peft": ("0.19.1", "0.21.2"),
}

#: The DeepSpeed release fastpeft's DeepSpeed support (fastpeft/patching/zero3.py,
#: fastpeft.spider.DeepSpeedSpider) was written and tested against; DeepSpeed is optional, so it
#: is not in TESTED (whose packages `fastpeft env` requires).
DEEPSPEED_TESTED = "0.19.8"


def _release(version: str) -> tuple[int, int, int]:
    """(major, minor, patch) of a version string; pre-release and local tags are ignored."""
    match = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", version)
    if match is None:
        raise ValueError(f"version must start with a number, got {version!r}")
    return tuple(int(part or 0) for part in match.groups())


def installed(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def untested_versions(found: dict[str, str | None] | None = None) -> list[str]:
    """One warning line per package outside `TESTED` (or missing); empty when all is tested.

    A release newer than the newest tested one counts as untested up to its minor version
    (5.24.3 is tested when 5.24.0 is), since patch releases keep interfaces."""
    found = {p: installed(p) for p in TESTED} if found is None else found
    lines = []
    for package, (oldest, newest) in TESTED.items():
        version = found.get(package)
        if version is None:
            lines.append(f"{package} is not installed (fastpeft needs {package}>={oldest})")
            continue
        have = _release(version)
        if have < _release(oldest):
            lines.append(
                f"{package} {version} is older than the oldest tested release {oldest}: "
                f"pip install '{package}>={oldest}'"
            )
        elif have[:2] > _release(newest)[:2]:
            lines.append(
                f"{package} {version} is newer than the newest tested release {newest}: "
                f"fastpeft checks what it relies on at patch() time, but this pair is untested; "
                f"pip install '{package}=={newest}' for a tested one"
            )
    return lines
