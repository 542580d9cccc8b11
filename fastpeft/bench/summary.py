"""The summary printed before the tables: per suite, method and provider, the geometric-mean
speedup over the baseline across cases, with its p20–p80 spread over repetitions.

Layers are summarised on mode "full" (forward + backward: what a training step pays). The floor
(`base`, `frozen`) is summarised as the bound it is: the most any method could gain.
"""

from .stats import NOISY_SPREAD, geomean, geomean_spread

_ROLE_KEY = {"floor": "speedup_bound_vs_", None: "speedup_vs_"}


def _key(row: dict) -> str:
    return _ROLE_KEY[row.get("role")] + row["baseline"]


def summarize(rows: list[dict]) -> list[dict]:
    """One entry per (suite, method, provider) that has speedups against its baseline."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if "speedup_samples" not in row or row.get("mode", "full") != "full":
            continue
        method = row.get("kind") or row.get("method") or ""
        groups.setdefault((row["suite"], method, row["provider"]), []).append(row)
    entries = []
    for (suite, method, provider), group in groups.items():
        key = _key(group[0])
        spread = geomean_spread([r["speedup_samples"] for r in group])
        entry = {"suite": suite, "method": method, "provider": provider}
        entry.update(baseline=group[0]["baseline"], role=group[0].get("role"), cases=len(group))
        entry.update({key: geomean([r[key] for r in group]), f"{key}_p20": spread.p20})
        entry[f"{key}_p80"] = spread.p80
        entry["noisy"] = spread.noisy
        memory = f"memory_vs_{entry['baseline']}"
        if all(memory in r for r in group):
            entry[memory] = geomean([r[memory] for r in group])
        entries.append(entry)
    return entries


def format_summary(entries: list[dict]) -> str:
    lines = [
        "summary: speedup over the named baseline (> 1 is faster), geometric mean across cases,",
        "[p20-p80 over repetitions]; layers: forward + backward; e2e: one training step",
    ]
    width = max((len(e["method"]) for e in entries), default=0)
    pwidth = max((len(e["provider"]) for e in entries), default=0)
    for e in entries:
        key = _key(e)
        value, low, high = e[key], e[f"{key}_p20"], e[f"{key}_p80"]
        head = f"  {e['suite']:<6} {e['method']:<{width}}  {e['provider']:<{pwidth}}  "
        cases = f"{e['cases']} case{'s' if e['cases'] != 1 else ''}"
        if e["role"] == "floor":
            text = (f"<= {value:.2f}x vs {e['baseline']} [{low:.2f}-{high:.2f}]  floor: the most "
                    f"any method could reach; {cases}")  # fmt: skip
        else:
            text = f"{value:.2f}x vs {e['baseline']} [{low:.2f}-{high:.2f}]  {cases}"
        memory = f"memory_vs_{e['baseline']}"
        if memory in e:
            text += f"; peak memory {e[memory]:.2f}x {e['baseline']}'s"
        if e["noisy"]:
            text += f"  NOISY (p80/p20 > {NOISY_SPREAD})"
        lines.append(head + text)
    return "\n".join(lines)
