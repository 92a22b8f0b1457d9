"""A run's verdict: a few sentences computed only from its numbers in metrics.json (the arms'
reports and costs and the pairwise ``comparisons``), never claiming a difference whose 95 %
interval contains zero.

What it states, in this order, for the arms that ran:

1. the fine-tune against the best other arm (by accuracy) that is neither trained from scratch
   nor adapted to the task first: who wins by how much, or "within noise", with the interval
   and McNemar's p;
2. what that cost: the two arms' wall seconds (and energy, where both were measured);
3. what pre-training is worth (fine-tuned vs trained from scratch), where ``scratch`` ran;
4. what task-adaptive pre-training adds (tapt vs fine-tuned), where ``tapt`` ran;
5. the arms that failed, and why.
"""

from __future__ import annotations

from typing import Any

from bertui.core.schema import ARM_NAMES
from bertui.core.stats import Comparison, describe, interval_text, points, size

FINETUNED, SCRATCH, TAPT = "finetuned", "scratch", "tapt"
# How a sentence names each arm (metrics' own ``title`` for the others).
NAMES = {
    "pretrained": "the pre-trained model",
    "probe": "the linear probe",
    FINETUNED: "fine-tuning",
    SCRATCH: "training from scratch",
    TAPT: "task-adaptive pre-training",
    "setfit": "SetFit",
}
# What tables call each arm (short: a column, a bar's label).
TITLES = {"pretrained": "pre-trained", "probe": "linear probe", FINETUNED: "fine-tuned",
          SCRATCH: "from scratch", TAPT: "task-adapted", "setfit": "SetFit"}
# The arms the headline does not put against the fine-tune: they have sentences of their own.
OWN_SENTENCE = (SCRATCH, TAPT)


def arm_reports(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The arms with scores, in the order they ran (``arms``; the three of old runs)."""
    order = metrics.get("arms") or ["pretrained", "probe", FINETUNED]
    return {n: r for n in order if isinstance(r := metrics.get(n), dict) and "accuracy" in r}


def failed_arms(metrics: dict[str, Any]) -> dict[str, str]:
    """Arms that failed at run time, in the order arms run: name → the one-line error in its
    entry."""
    return {n: str(r["error"]) for n in ARM_NAMES
            if isinstance(r := metrics.get(n), dict) and r.get("error") and "accuracy" not in r}


def arm_title(metrics: dict[str, Any], name: str) -> str:
    """What a table calls an arm: a short title of its own, else the one its report
    carries."""
    return TITLES.get(name) or str((metrics.get(name) or {}).get("title") or name)


def comparisons(metrics: dict[str, Any]) -> list[Comparison]:
    out = []
    for entry in metrics.get("comparisons") or []:
        try:
            out.append(Comparison.from_dict(entry))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def find(found: list[Comparison], a: str, b: str, metric: str = "accuracy") -> Comparison | None:
    """The comparison ``a`` − ``b`` on ``metric``, whichever way round it was stored."""
    for c in found:
        if c.metric == metric and (c.a, c.b) == (a, b):
            return c
        if c.metric == metric and (c.a, c.b) == (b, a):
            return c.flipped()
    return None


def names(metrics: dict[str, Any]) -> dict[str, str]:
    """How the sentences name each arm: an untrained head is called that."""
    note = str((metrics.get("pretrained") or {}).get("note") or "")
    out = {n: str(r.get("title") or n) for n, r in arm_reports(metrics).items()}
    out.update(NAMES)
    if "untrained" in note:
        out["pretrained"] = "the untrained head"
    return out


def headline_rival(metrics: dict[str, Any]) -> str | None:
    """The best other arm by accuracy that the headline puts against the fine-tune."""
    reports = arm_reports(metrics)
    rivals = [n for n in reports if n != FINETUNED and n not in OWN_SENTENCE]
    return max(rivals, key=lambda n: reports[n]["accuracy"], default=None)


def verdict(metrics: dict[str, Any]) -> str | None:
    """The verdict sentences, or None when there is nothing to compare (no comparisons: a
    run made before them, or one arm alone)."""
    found, titles = comparisons(metrics), names(metrics)
    sentences = []
    rival = headline_rival(metrics)
    if rival is not None and (headline := find(found, FINETUNED, rival)) is not None:
        sentences.append(capitalised(describe(headline, titles)))
        sentences.append(cost_sentence(metrics, FINETUNED, rival, titles))
    scratch = find(found, FINETUNED, SCRATCH)
    if scratch is not None:
        sentences.append(pretraining_sentence(scratch))
    tapt = find(found, TAPT, FINETUNED)
    if tapt is not None:
        sentences.append(tapt_sentence(tapt))
    for name, error in failed_arms(metrics).items():
        reason = error.split(". ")[0]  # "OutOfMemoryError: CUDA out of memory"
        sentences.append(f"{capitalised(titles.get(name, name))} failed ({reason}); the other "
                         "arms' results stand.")
    return " ".join(s for s in sentences if s) or None


def cost_sentence(metrics: dict[str, Any], a: str, b: str, titles: dict[str, str]) -> str:
    """ "It cost 28 s against the linear probe's 2 s (1.2 Wh against 0.1 Wh)." """
    cost_a, cost_b = ((metrics.get(n) or {}).get("cost") or {} for n in (a, b))
    if cost_a.get("seconds") is None or cost_b.get("seconds") is None:
        return ""
    spent_a, spent_b = seconds(cost_a["seconds"]), seconds(cost_b["seconds"])
    text = f"It cost {spent_a} against {titles[b]}'s {spent_b}"
    wh_a, wh_b = cost_a.get("energy_wh"), cost_b.get("energy_wh")
    if wh_a is not None and wh_b is not None:
        text += f" ({watt_hours(wh_a)} against {watt_hours(wh_b)})"
    return text + "."


def pretraining_sentence(c: Comparison) -> str:
    """Fine-tuned − from scratch."""
    if c.significant and c.delta > 0:
        return (f"Pre-training is worth {size(c)} (fine-tuned vs from "
                f"scratch, {interval_text(c)}).")
    if c.significant:
        return (f"Training from scratch beats the pre-trained model's fine-tune by "
                f"{size(c)} ({interval_text(c)}).")
    return (f"Pre-training is within noise on {c.n} eval rows here: fine-tuned vs from scratch "
            f"{points(c.delta)} points ({interval_text(c)}).")


def tapt_sentence(c: Comparison) -> str:
    """Task-adapted − fine-tuned."""
    return capitalised(describe(c, {TAPT: NAMES[TAPT], FINETUNED: "the plain fine-tune"}))


def seconds(value: float) -> str:
    """ "0.4 s", "28 s", "3 min 5 s", "1 h 02 min" """
    value = float(value)
    if value < 10:
        return f"{value:.1f} s"
    if value < 60:
        return f"{value:.0f} s"
    minutes, secs = divmod(round(value), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def watt_hours(value: float) -> str:
    return f"{value:.2g} Wh" if value < 1 else f"{value:.1f} Wh"


def capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]
