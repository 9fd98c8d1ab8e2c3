"""The headline benchmark's report: the three numbers per method, the goals (each named by what it measures) and the Markdown.

Used by ``benchmarks/unseen_arch.py``; ``training`` / ``unseen`` are the run's architecture sets
(the built-in ones unless ``--archs`` / ``--plugin`` change them).
"""
from __future__ import annotations

#: the rows the report names: the no-learning baselines, the zero-block encoder, the conversion
#: baseline, the encoder whose numbers the goals are about, the weights-only row
SAMPLED = "sampled outputs"
#: the stronger no-learning baseline: each INR's density read as an occupancy, its distance from
#: where that changes sign (a 33^3 grid) at the probe points (gmn_inr.canonical.surface_distance)
SURFACE = "surface distance"
#: the ceiling, not a method: each object's exact signed distance at the probe points, from the
#: zoo's shape rather than from any INR (the same vector for every architecture of an object)
EXACT = "exact geometry (ceiling, no INR)"
NO_MESSAGE_PASSING = "L_R+C, no message passing"
CONVERSION = "conversion (voxel grid + 3D CNN)"
MAIN = "L_R+C"
PAPER_GRAPH = "L_R+C, paper graph"


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def markdown(report: dict) -> str:
    lines = [f"# unseen_arch — preset `{report['meta']['preset']}`", "",
             f"{report['meta']['date']}, commit `{report['meta']['commit']}`, device {report['meta']['device']}, "
             f"wall {report['meta']['wall_seconds'] / 60:.1f} min. Accuracies and recalls in %.", ""]
    secs = {"L_R+C": report["timing"].get("gmn_direct"), CONVERSION: report["timing"].get("conversion")}
    lines += ["## Headline: every method on the three numbers (test objects)", "",
              "| method | recall@1 ALL/ALL | worst unseen variant (classifier on ALL) | "
              "worst other family (classifier on one family) | s/INR |", "|---|---|---|---|---|"]
    for name, h in report.get("headline", {}).items():
        t = secs.get(name, report["timing"].get(name))
        lines.append(f"| {name} | {_pct(h['recall@1'])} | {_pct(h['worst_unseen'])} | {_pct(h['worst_family'])} | "
                     + ("—" if t is None else f"{t:.4f}") + " |")
    lines.append("")
    for loss, table in report["classification"].items():
        tests = list(next(iter(table.values())).keys()) if table else []
        lines += [f"## Classification — encoder {loss}", "",
                  "| classifier trained on | " + " | ".join(tests) + " |", "|---" * (len(tests) + 1) + "|"]
        lines += [f"| {tr} | " + " | ".join(_pct(row.get(t)) for t in tests) + " |" for tr, row in table.items()]
        lines.append("")
    lines += ["## Instance retrieval (recall@k of the same object, test split)", ""]
    pairs = list(next(iter(report["retrieval"].values())).keys()) if report["retrieval"] else []
    lines += ["| encoder | k | " + " | ".join(pairs) + " |", "|---" * (len(pairs) + 2) + "|"]
    for loss, table in report["retrieval"].items():
        for k in ("1", "5", "10"):
            lines.append(f"| {loss} | {k} | " + " | ".join(_pct(table[p][k]) for p in pairs) + " |")
    lines.append("")
    lines += ["## Baselines (same split)", ""]
    lines += ["Classification and retrieval rows of the sampled outputs, of the encoder without message "
              "passing and of the conversion baseline's features are in the tables above.", ""]
    for name, row in report["baselines"].items():
        lines += [f"**{name}**: " + ", ".join(f"{a} {_pct(v)}" for a, v in row.items()), ""]
    lines += ["## Seconds per INR", "", "| method | s/INR |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in report["timing"].items()]
    lines += ["", "## Goals", ""] + [f"- {g}" for g in report["goals"]]
    return "\n".join(lines) + "\n"


def headline_numbers(report: dict, name: str, training, unseen) -> dict:
    """The three numbers of ``name``'s rows (None where the method has no such row):
    ``recall@1`` ALL/ALL, ``worst_unseen`` (classifier on ALL, worst unseen variant) and
    ``worst_family`` (a classifier on one family, worst other training family)."""
    cls = report["classification"].get(name)
    if cls is None and name == CONVERSION:     # its classifier is trained on ALL only
        row = next((r for k, r in report["baselines"].items() if k.startswith("conversion")), None)
        cls = {"ALL": row} if row else {}
    cls = cls or {}
    unseen = [v for a, v in cls.get("ALL", {}).items() if a in unseen and v is not None]
    fam = [v for tr, row in cls.items() if tr != "ALL" for te, v in row.items()
           if te in training and te != tr and v is not None]
    r1 = report["retrieval"].get(name, {}).get("ALL/ALL", {}).get("1")
    return {"recall@1": r1, "worst_unseen": min(unseen) if unseen else None,
            "worst_family": min(fam) if fam else None}


def headline_table(report: dict, training, unseen) -> dict:
    """``{method: headline_numbers}`` for every encoder and every baseline with retrieval rows."""
    names = list(report["classification"]) + [n for n in report["retrieval"] if n not in report["classification"]]
    return {n: headline_numbers(report, n, training, unseen) for n in names}


def goals(report: dict, training, unseen) -> list[str]:
    out = []
    # a learned encoder is worth what it beats: 5 points over every simpler method on each number
    head = report.get("headline") or headline_table(report, training, unseen)
    ours = head.get(MAIN)
    if ours:
        for base in (SAMPLED, SURFACE, NO_MESSAGE_PASSING, CONVERSION):
            theirs = head.get(base)
            if not theirs:
                continue
            cmp = [(k, ours[k], theirs[k]) for k in ours if ours[k] is not None and theirs[k] is not None]
            ok = all(a >= b + 0.05 for _, a, b in cmp)
            out.append(f"{MAIN} beats {base} by >= 5 points on every headline number: "
                       + ", ".join(f"{k} {_pct(a)} vs {_pct(b)}" for k, a, b in cmp)
                       + f" -> {'met' if ok else 'missed'}")
        targets = {"recall@1": 0.95, "worst_unseen": 0.95, "worst_family": 0.90}
        ceiling = head.get(EXACT, {})
        for k, t in targets.items():
            if ours[k] is not None:
                c = ceiling.get(k)
                out.append(f"{MAIN} {k} >= {100 * t:.0f}%: {_pct(ours[k])}% -> {'met' if ours[k] >= t else 'missed'}"
                           + ("" if c is None else f" (exact geometry reaches {_pct(c)}%"
                              + (": the target lies above the ceiling)" if c < t else ")")))
    paper = report["retrieval"].get(PAPER_GRAPH, {}).get("ALL/ALL", {}).get("1")
    paper_all = report["classification"].get(PAPER_GRAPH, {}).get("ALL", {})
    if paper is not None and paper_all:
        fams = {a: paper_all[a] for a in training if a in paper_all}
        ok = paper >= 0.10 and all(v >= 0.5 for v in fams.values())
        out.append(f"the paper's graph and encoder (weights only) learn: recall@1 ALL/ALL {_pct(paper)}% (>= 10%), "
                   "ALL classifier " + ", ".join(f"{a} {_pct(v)}" for a, v in fams.items())
                   + f" (each >= 50%) -> {'met' if ok else 'missed'}")
    cls = report["classification"].get("L_R+C", {})
    allrow = cls.get("ALL", {})
    unseen = {a: v for a, v in allrow.items() if a in unseen}
    if unseen:
        worst = min(unseen, key=unseen.get)
        out.append(f"ALL classifier >= 85% on every unseen variant (L_R+C): worst {worst} {_pct(unseen[worst])}% -> "
                   f"{'met' if unseen[worst] >= 0.85 else 'missed'}")
    fam = [(tr, te, v) for tr, row in cls.items() if tr != "ALL" for te, v in row.items()
           if te in training and te != tr]
    if fam:
        tr, te, v = min(fam, key=lambda x: x[2])
        out.append(f"one-family classifier >= 70% on the other families (L_R+C): worst {tr}->{te} {_pct(v)}% -> "
                   f"{'met' if v >= 0.7 else 'missed'}")
    r_rc = report["retrieval"].get("L_R+C", {}).get("ALL/ALL", {}).get("1")
    r_r = report["retrieval"].get("L_R", {}).get("ALL/ALL", {}).get("1")
    if r_rc is not None and r_r is not None:
        ok = r_rc >= 0.5 and r_rc >= 10 * max(r_r, 1e-9)
        out.append(f"recall@1 ALL/ALL >= 50% and >= 10x L_R's: {_pct(r_rc)}% vs L_R {_pct(r_r)}% -> {'met' if ok else 'missed'}")
    t = report["timing"]
    if "gmn_direct" in t and "distillation" in t:
        ratio = t["distillation"] / t["gmn_direct"]
        out.append(f"direct embedding >= 100x faster than distillation: {ratio:.0f}x -> {'met' if ratio >= 100 else 'missed'}")
    conv = next((row for name, row in report["baselines"].items() if name.startswith("conversion")), None)
    if "gmn_direct" in t and "conversion" in t and conv and allrow:
        common = [a for a in allrow if conv.get(a) is not None]
        ours, theirs = (sum(r[a] for a in common) / len(common) for r in (allrow, conv))
        ok = t["gmn_direct"] < t["conversion"] and ours >= theirs
        out.append(f"direct embedding faster than conversion at equal or better accuracy: {t['gmn_direct']:.4f} vs "
                   f"{t['conversion']:.4f} s/INR, mean accuracy {_pct(ours)}% vs {_pct(theirs)}% -> {'met' if ok else 'missed'}")
    return out
