"""`summary.md` of the proof suite: the verdicts first (each target beside its figure), then what
each part did or why it was skipped, then the measured tables."""

PART_NAMES = ("gpu_tests", "ceilings", "layers", "spider", "e2e")


def _ms(row: dict, key: str = "median_ms") -> str:
    low, high = key.replace("median", "p20"), key.replace("median", "p80")
    if key == "step_ms":
        low, high = "step_p20_ms", "step_p80_ms"
    if key not in row:
        return row.get("error", "—")[:60]
    return f"{row[key]:.3g} [{row[low]:.3g}–{row[high]:.3g}]"


def _x(row: dict, key: str) -> str:
    return f"{row[key]:.2f}x" if key in row else "—"


def _targets(targets: list[dict], smoke: bool) -> list[str]:
    lines = ["| target | goal | measured | verdict | case / kernels |", "|---|---|---|---|---|"]
    for t in targets:
        measured = "—" if t["measured"] is None else f"{t['measured']:g}"
        verdict = t["verdict"] + (" (smoke)" if smoke else "")
        where = t.get("case", "") + (f"; kernels: {t['kernels']}" if "kernels" in t else "")
        where += f"; {t['note']}" if "note" in t else ""
        lines.append(f"| {t['target']} | {t['goal']} | {measured} | {verdict} | {where} |")
    return lines


def _parts(parts: dict) -> list[str]:
    lines = ["| part | status | seconds | limit s | note |", "|---|---|---|---|---|"]
    for name in PART_NAMES:
        p = parts.get(name, {"status": "not reached"})
        note = p.get("reason", "")
        for extra in ("layers_note", "host_sync_check", "selection", "note"):
            if extra in p:
                note += ("; " if note else "") + str(p[extra])
        lines.append(
            f"| {name} | {p['status']} | {p.get('seconds', '—')} | "
            f"{p.get('limit_s', '—')} | {note} |"
        )
    return lines


def _tests(p: dict) -> list[str]:
    if "passed" not in p:
        return []
    counts = ", ".join(f"{p[k]} {k}" for k in ("passed", "failed", "error", "skipped"))
    lines = ["", f"## gpu tests\n\n{counts} (from {p['counted_from']}; exit {p['returncode']})"]
    lines += [f"- {f}" for f in p.get("failures", [])[:20]]
    if p.get("last_test_started"):
        lines.append(f"- last test started: {p['last_test_started']}")
    return lines


def _ceilings(p: dict) -> list[str]:
    peaks = p.get("peaks")
    if not peaks:
        return []
    l2 = ""
    if "l2_read_gbps" in peaks:
        l2 = (
            f"; L2 read {peaks['l2_read_gbps']:.0f} GB/s (median "
            f"{peaks['l2_read_gbps_median']:.0f}, {peaks['l2_probe_mib']} MiB read over)"
        )
    return [
        "",
        "## ceilings",
        "",
        f"copy {peaks['copy_gbps']:.0f} GB/s (median {peaks['copy_gbps_median']:.0f}); "
        f"{peaks['matmul_dtype']} matmul {peaks['matmul_tflops']:.3g} TFLOP/s "
        f"(median {peaks['matmul_tflops_median']:.3g}); best of {peaks['repetitions']}{l2}",
    ]


def _layers(p: dict) -> list[str]:
    rows = p.get("rows", [])
    if not rows:
        return []
    lines = [
        "",
        "## layers (ms: median [p20–p80])",
        "",
        "| case | provider | fwd | bwd | fwd+bwd | x baseline | x floor |",
        "|---|---|---|---|---|---|---|",
    ]
    by = {(r["case"], r["provider"], r["mode"]): r for r in rows}
    for case, provider in dict.fromkeys((r["case"], r["provider"]) for r in rows):
        fwd, bwd, full = (by[(case, provider, m)] for m in ("fwd", "bwd", "full"))
        speedup = _x(full, f"speedup_vs_{full['baseline']}")
        lines.append(
            f"| {case} | {provider} | {_ms(fwd)} | {_ms(bwd)} | {_ms(full)} | "
            f"{speedup} | {_x(full, 'time_vs_base')} |"
        )
    return lines


def _spider(p: dict) -> list[str]:
    rows = p.get("rows", [])
    if not rows:
        return []
    lines = [
        "",
        "## SPIDER step",
        "",
        "| provider | elements | ms | x fused AdamW time |",
        "|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['time_vs_adamw']:.2f}" if "time_vs_adamw" in r else "—"
        lines.append(f"| {r['provider']} | {r['elements']:,} | {_ms(r)} | {ratio} |")
    return lines


def _e2e(p: dict) -> list[str]:
    rows = p.get("rows", [])
    if not rows:
        return []
    lines = [
        "",
        f"## e2e ({p.get('size')}, one training step)",
        "",
        "| method | provider | step ms | tokens/s | peak MiB | x baseline | x frozen |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        tps = f"{r['tokens_per_s']:,.0f}" if "tokens_per_s" in r else "—"
        peak = f"{r['peak_mib']:,.0f}" if r.get("peak_mib") is not None else "—"
        lines.append(
            f"| {r['method']} | {r['provider']} | {_ms(r, 'step_ms')} | {tps} | {peak} "
            f"| {_x(r, 'speedup_vs_' + r['baseline'])} | {_x(r, 'time_vs_frozen')} |"
        )
    return lines


def format_summary(result: dict) -> str:
    smoke = result["smoke"]
    head = "# fastpeft GPU proof" + (" — SMOKE RUN (tiny shapes; not evidence)" if smoke else "")
    lines = [
        head,
        "",
        f"{result['device']}, git {result['git_sha']}, torch "
        f"{result['versions'].get('torch')}, budget {result['budget_s']:.0f} s, "
        f"took {result['seconds']:.0f} s{', smoke' if smoke else ''}",
        "",
        "## targets",
        "",
    ]
    lines += _targets(result["targets"], smoke)
    lines += ["", "## parts", ""] + _parts(result["parts"])
    parts = result["parts"]
    lines += _tests(parts.get("gpu_tests", {})) + _ceilings(parts.get("ceilings", {}))
    lines += _layers(parts.get("layers", {})) + _spider(parts.get("spider", {}))
    lines += _e2e(parts.get("e2e", {}))
    return "\n".join(lines) + "\n"
