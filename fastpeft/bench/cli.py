"""`fastpeft bench`: check the arguments, say what will run, run the suites (writing what is done
after every case, so an interrupted run keeps what it measured), print the summary and the
tables, and write the JSON, one CSV per suite and the plots.
"""

import copy
import time
from pathlib import Path

import torch

from . import environment, plan, results
from .plots import write_plots
from .suites import finish_e2e, finish_layers, finish_spider, run_e2e, run_layers, run_spider
from .summary import format_summary, summarize
from .timing import best_peaks, measured_peaks
from .validate import bench_errors

SUITES = ("layers", "e2e", "spider")


class _Writer:
    """Writes the run's JSON and per-suite CSVs: after every case of a running suite (its rows so
    far, `suite_running` naming it), after each suite, and at the end."""

    def __init__(self, out: Path, name: str, meta: dict):
        self.out, self.name, self.meta = out, name, meta
        self.started = time.time()

    def __call__(self, rows: list[dict], done: list[str], running: str | None = None) -> list[Path]:
        meta = {**self.meta, "complete": running is None and self.meta["suites"] == done}
        meta.update(suites_done=list(done), suite_running=running)
        meta["seconds"] = round(time.time() - self.started, 1)
        result = {**meta, "summary": summarize(rows), "warnings": results.all_warnings(rows)}
        written = [results.write_json(self.out, self.name, {**result, "rows": rows})]
        return written + results.write_csvs(self.out, self.name, meta, rows)


def run_bench(suite: str, level: str | None, out: Path, dtype: str | None, device: str | None,
              compile_: bool | None) -> dict:  # fmt: skip
    """Run `suite` ("layers", "e2e", "spider", "all") at `level` ("full", "quick", "smoke"; None:
    full on a GPU, quick on a CPU); returns the written result. Raises ValueError naming the
    argument when one is unusable, before any work."""
    errors = bench_errors(out, device, dtype)
    if suite not in (*SUITES, "all"):
        errors.append(f"--suite {suite!r}: must be one of {', '.join((*SUITES, 'all'))}")
    if errors:
        raise ValueError("; ".join(errors))
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or ("bfloat16" if dev.type == "cuda" else "float32")
    compile_ = dev.type == "cuda" if compile_ is None else compile_
    level, note = plan.resolve_level(level, dev)
    suites = SUITES if suite == "all" else (suite,)
    out.mkdir(exist_ok=True)  # the parent exists (checked): create the last component only
    device_name = environment.device_name(dev)
    print(f"fastpeft bench --{level} on {device_name}, {dtype}, git {environment.git_sha()}")
    if note:
        print(note)
    for line in plan.describe(suites, level, dev, dtype, compile_):
        print("  " + line)
    print("  " + plan.format_estimate(*plan.estimate_seconds(suites, level, dev), dev), flush=True)
    peaks = measured_peaks(dev, quick=level != "full")
    meta = {
        "git_sha": environment.git_sha(),
        "device": device_name,
        "versions": environment.versions(),
        "settings": {"suite": suite, "level": level, "dtype": dtype, "compile": compile_},
        "peaks": peaks,
    }
    write = _Writer(out, f"bench_{suite}_{level}", {**meta, "suites": list(suites)})
    finishers = {
        "layers": lambda suite_rows: finish_layers(suite_rows, peaks, dtype),
        "e2e": finish_e2e,
        "spider": finish_spider,
    }
    runners = {"layers": run_layers, "e2e": run_e2e, "spider": run_spider}
    rows: list[dict] = []
    done: list[str] = []
    for name in suites:

        def checkpoint(suite_rows: list[dict], name: str = name) -> None:
            partial = copy.deepcopy(suite_rows)  # the finished rows get their meaning once
            finishers[name](partial)
            write(rows + partial, done, running=name)

        suite_started = time.time()
        try:
            suite_rows = runners[name](dev, dtype, level, compile_, checkpoint)
        except KeyboardInterrupt:
            print(f"\ninterrupted during {name}: what was measured is in {out}")
            raise
        if name == "layers":
            # Measured again now and the better kept: a shared machine busy during one of the
            # two measurements would otherwise put its slowness into every percentage.
            peaks.update(best_peaks(peaks, measured_peaks(dev, quick=level != "full")))
        finishers[name](suite_rows)
        rows.extend(suite_rows)
        done.append(name)
        write(rows, done)
        print(f"{name} done in {time.time() - suite_started:.0f} s (written to {out})", flush=True)
    l2 = f", {peaks['l2_read_gbps']:.0f} GB/s L2 read" if "l2_read_gbps" in peaks else ""
    print(f"\nmeasured ceilings (best of {peaks['repetitions']} calls): "
          f"{peaks['copy_gbps']:.0f} GB/s copy, "
          f"{peaks['matmul_tflops']:.3g} TFLOP/s {peaks['matmul_dtype']} matmul{l2}")  # fmt: skip
    print("\n" + format_summary(summarize(rows)))
    for name in suites:
        print(f"\n[{name}]\n" + results.format_table(rows, name))
    written = write(rows, done)
    written += write_plots(out, f"bench_{suite}_{level}", meta, rows)
    print("\nwrote " + ", ".join(str(p) for p in written))
    return {**meta, "rows": rows, "files": [str(p) for p in written]}
