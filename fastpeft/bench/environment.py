"""What a benchmark ran on: device name, versions, git sha (recorded with every result)."""

import platform
import subprocess
from pathlib import Path

import torch


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    return f"{platform.processor() or 'cpu'} ({torch.get_num_threads()} threads)"


def _git(*args: str) -> str:
    out = subprocess.run(
        ["git", *args], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
    )
    return out.stdout.strip()


def git_sha() -> str:
    """The short commit, with "+dirty" when tracked files differ from it: the figures then come
    from code that no commit holds."""
    try:
        sha = _git("rev-parse", "--short", "HEAD")
        return sha + ("+dirty" if _git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions() -> dict[str, str]:
    import peft
    import transformers
    import triton

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


def _optional_version(module: str) -> str | None:
    import importlib
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return None
    try:
        return str(getattr(importlib.import_module(module), "__version__", "installed"))
    except Exception as exc:  # an installed but broken package (e.g. a flash-attn ABI mismatch)
        return f"broken ({type(exc).__name__}: {exc})"


def report() -> dict:
    """What `fastpeft env` prints: versions, device, usable backends, optional components."""
    from .. import __version__, _ext
    from .. import env as fastpeft_env
    from .. import versions as tested_versions

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    ext = _ext.load()
    info = {"fastpeft": __version__, **versions(), "device": device_name(device)}
    if cuda:
        major, minor = torch.cuda.get_device_capability(device)
        info["compute_capability"] = f"sm_{major}{minor}"
        info["cuda"] = torch.version.cuda
    triton_ok = cuda or fastpeft_env.triton_interpret()
    info["backends"] = ["torch"] + (["triton"] if triton_ok else [])
    info["backend_auto"] = "triton" if cuda else "torch"
    if not cuda:
        info["triton_note"] = "no CUDA GPU: Triton kernels run only under TRITON_INTERPRET=1"
    info["fastpeft._C"] = (
        f"available (CUDA kernels: {'yes' if ext.has_cuda() else 'no'})"
        if ext is not None
        else f"missing ({_ext.import_error()}); rebuild with {_ext.REBUILD_CMD}"
    )
    info["flash_attn"] = _optional_version("flash_attn") or "not installed (optional)"
    info["matplotlib"] = _optional_version("matplotlib") or "not installed (no PNG plots)"
    oldest = {package: bounds[0] for package, bounds in tested_versions.TESTED.items()}
    newest = {package: bounds[1] for package, bounds in tested_versions.TESTED.items()}
    info["tested_with"] = ", ".join(
        f"{package} {oldest[package]} to {newest[package]}" for package in oldest
    )
    info["warnings"] = tested_versions.untested_versions()
    return info


def write_result(path: Path, benchmark: str, device: torch.device, rows: list, **extra) -> None:
    """Write rows as JSON with the device name, git sha and package versions."""
    import json

    result = {
        "benchmark": benchmark,
        "device": device_name(device),
        "git_sha": git_sha(),
        "versions": versions(),
        **extra,
        "rows": rows,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
