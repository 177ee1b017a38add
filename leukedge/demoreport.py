"""The demo's ending: a per-slide table, which model deployed and why, and `summary.json`.

Built from the agent's own messages, so it reads the same with a broker (the lab system
collected them over MQTT) and offline (the agent's results log). A slide is `wrong` when its
decision is a class that is not the slide's true class; `refer` and `insufficient` are the
box declining to decide, never wrong. The same counts are kept per field.
"""

from __future__ import annotations

import json
from pathlib import Path

from leukedge.lab import slide_id

NOT_A_CLASS = ("refer", "insufficient")  # decisions that decline to name a class: never wrong
SUMMARY_KEYS = ("deployed", "why", "models", "slides", "totals", "mode", "seconds")
ROW_KEYS = ("slide", "true_class", "decision", "n_fields", "referred", "wrong")


def is_wrong(decision: str, truth: str | None) -> bool:
    return decision not in NOT_A_CLASS and truth is not None and decision != truth


def slide_rows(samples: list[dict], results: list[dict], slides: list[dict]) -> list[dict]:
    """One row per closed sample. Its slide is the one whose id it carries (a lab system named it);
    an auto-opened sample (offline: one closes every slide's worth of fields) is the slide at its
    place in the video. Its fields are the results whose `seq` lies in its first..last seq."""
    by_id = {slide_id(s): s for s in slides}
    rows = []
    for i, sample in enumerate(samples):
        slide = by_id.get(sample["sample_id"]) or (slides[i] if i < len(slides) else None)
        truth = slide["label"] if slide else None
        fields = [r for r in results if sample["first_seq"] <= r["seq"] <= sample["last_seq"]]
        rows.append({"slide": slide_id(slide) if slide else sample["sample_id"], "sample_id": sample["sample_id"],
                     "true_class": truth, "decision": sample["decision"], "n_fields": sample["n_fields"],
                     "referred": sum(r["decision"] == "refer" for r in fields),
                     "wrong": sum(is_wrong(r["decision"], truth) for r in fields)})
    return rows


def totals(rows: list[dict]) -> dict:
    return {"slides": len(rows),
            "correct": sum(r["decision"] == r["true_class"] for r in rows),
            "refer": sum(r["decision"] == "refer" for r in rows),
            "insufficient": sum(r["decision"] == "insufficient" for r in rows),
            "wrong": sum(is_wrong(r["decision"], r["true_class"]) for r in rows),
            "fields": sum(r["n_fields"] for r in rows),
            "fields_referred": sum(r["referred"] for r in rows),
            "fields_wrong": sum(r["wrong"] for r in rows)}


def table(rows: list[dict]) -> list[str]:
    """The per-slide table and a line of totals, in words a technician reads."""
    head = f"{'slide':10s} {'true class':11s} {'decision':13s} {'fields':>6s} {'referred':>8s} {'wrong':>5s}"
    lines = [head] + [f"{r['slide']:10s} {r['true_class'] or 'unknown':11s} {r['decision']:13s} "
                      f"{r['n_fields']:>6d} {r['referred']:>8d} {r['wrong']:>5d}" for r in rows]
    t = totals(rows)
    lines.append(f"{t['correct']} of {t['slides']} slides decided correctly, {t['refer']} referred, "
                 f"{t['insufficient']} insufficient, {t['wrong']} wrong (a wrong slide names a class that is "
                 f"not the slide's; refer and insufficient send it to a person, they are not wrong)")
    return lines


def model_facts(reports: dict[str, dict], bundles: dict, deployed: str, expected_off: dict[str, str]) -> dict:
    """Each model's test accuracy, colour baseline, gate outcome and why it is or is not on the box."""
    facts = {}
    for arch, rep in reports.items():
        passed, beats = arch in bundles, (rep.get("beats_baseline") or 0) > 0
        acc, base = rep["accuracy"], rep["baseline_accuracy"]
        if arch == deployed:
            status, why = "deployed", (f"it passed the int8 gate and beats the colour baseline "
                                       f"({100 * acc:.1f} % against {100 * base:.1f} %)")
        elif not beats:
            status, why = "kept off the box", (f"below the colour baseline ({100 * acc:.1f} % against "
                                               f"{100 * base:.1f} %), so the deploy rule keeps it off")
        elif not passed:
            status, why = "kept off the box", "the int8 gate refused it: its int8 copy loses too much accuracy"
        else:
            status, why = "not deployed", f"{deployed} comes first"
        if arch != deployed and arch in expected_off:
            why += f"; expected on a CPU: {expected_off[arch]}"
        facts[arch] = {"test_accuracy": acc, "accuracy_box": rep.get("accuracy_box"), "colour_baseline": base,
                       "int8_gate": "passed" if passed else "refused",
                       "bundle": str(bundles[arch]) if passed else None, "deployed": arch == deployed,
                       "status": status, "why": why}
    return facts


def summary(deployed: str, models: dict, rows: list[dict], mode: str, seconds: dict) -> dict:
    """What `summary.json` holds: the console summary, for scripts (keys in SUMMARY_KEYS)."""
    return {"deployed": deployed, "why": models[deployed]["why"], "models": models,
            "slides": rows, "totals": totals(rows), "mode": mode,
            "seconds": {k: round(v, 1) for k, v in seconds.items()}}


def write_summary(path: Path, content: dict) -> Path:
    path.write_text(json.dumps(content, indent=2) + "\n")
    return path


def read_log(path: Path) -> tuple[list[dict], list[dict]]:
    """(samples, results) from an agent's results log (JSON lines with a `type`), in order."""
    samples, results = [], []
    for line in path.read_text().splitlines():
        try:
            msg = json.loads(line)
        except ValueError:  # a line a crash tore
            continue
        if msg.get("type") == "sample":
            samples.append(msg)
        elif msg.get("type") == "result":
            results.append(msg)
    return samples, results
