"""A build's summary: counts, gate pass rates and fitting speeds of the run, totals of the zoo."""
from __future__ import annotations

from collections import defaultdict


def summarise(writer, stats: list, elapsed: float, adopted: int, new: int) -> dict:
    """Counts, gate pass rates and speeds of this run plus totals of the zoo."""
    per_fam = defaultdict(lambda: {"fitted": 0, "seconds": 0.0, "pass_first": 0, "pass": 0})
    per_arch = defaultdict(lambda: {"fitted": 0, "pass": 0, "seconds": 0.0})
    for arch, fam, function, n, secs, p1, p in stats:
        f = per_fam[fam]
        f["fitted"] += n
        f["seconds"] += secs
        f["pass_first"] += p1
        f["pass"] += p
        per_arch[f"{arch}/{function}"]["fitted"] += n
        per_arch[f"{arch}/{function}"]["pass"] += p
        per_arch[f"{arch}/{function}"]["seconds"] += secs
    fam_out = {k: {**v, "inrs_per_s": round(v["fitted"] / v["seconds"], 3) if v["seconds"] else None,
                   "pass_rate_first_try": round(v["pass_first"] / v["fitted"], 3) if v["fitted"] else None,
                   "pass_rate": round(v["pass"] / v["fitted"], 3) if v["fitted"] else None,
                   "seconds": round(v["seconds"], 1)} for k, v in sorted(per_fam.items())}
    inrs = writer.manifest["inrs"]
    by = defaultdict(int)
    for e in inrs.values():
        by[f"{e['arch']}/{e['function']}"] += 1
    return {
        "time_s": round(elapsed, 1), "fitted_this_run": sum(s[3] for s in stats), "stored_this_run": new,
        "adopted_orphans": adopted, "objects": len(writer.manifest["objects"]), "classes": len(writer.manifest["classes"]),
        "inrs_total": len(inrs), "dropped_total": len(writer.manifest["dropped"]),
        "bytes_total": sum(e["bytes"] for e in inrs.values()), "per_family": fam_out,
        "per_arch_function_this_run": {k: {**v, "seconds": round(v["seconds"], 2)} for k, v in sorted(per_arch.items())},
        "stored_per_arch_function": dict(sorted(by.items())),
    }
