"""How recognisable are the held-out phrasings? For each, its nearest training phrasing by character
3-gram TF-IDF cosine (phrasing_grammar.nearest_neighbour_stat, on dialogue_domain.audit_texts: slots
filled with one fixed value, normalised); prints the share whose nearest training phrasing belongs to
another intent, with the training phrasings the domain has now (hand-written + phrasing_grammar) and
with the hand-written ones alone, and the generated phrasings per intent (docs/phrasing_audit.md).

    python tools/phrasing_audit.py [--verbose] [--json]
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import dialogue_domain as domain  # noqa: E402
import phrasing_grammar  # noqa: E402
from telugu_text import edit_distance  # noqa: E402


def audit(handwritten_only: bool) -> dict:
    heldout, train = domain.audit_texts(handwritten_only)
    result = phrasing_grammar.nearest_neighbour_stat(heldout, train)
    # a near copy: the nearest training phrasing of its own intent is one word away (or less)
    own = {}
    for name, text in train:
        own.setdefault(name, []).append(text.split())
    near = [min(edit_distance(text.split(), t) for t in own.get(name, [[]])) <= 1 for name, text in heldout]
    result["near_copies"] = sum(near)
    for row, is_near in zip(result["rows"], near):
        row["near_copy"] = is_near
    result["training_phrasings"] = len(train)
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--verbose", action="store_true", help="every held-out phrasing with its nearest matches")
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")
    a = p.parse_args(argv)
    counts = [it.n_generated for it in domain.INTENTS.values()]
    report = {"intents": len(domain.INTENTS),
              "generated_per_intent": {"min": min(counts), "median": statistics.median(counts), "max": max(counts)},
              "handwritten_only": audit(True), "with_generated": audit(False)}
    if a.json:
        print(json.dumps(report, ensure_ascii=False, indent=1))
        return 0
    g = report["generated_per_intent"]
    print(f"{report['intents']} intents; generated training phrasings per intent: "
          f"min {g['min']}, median {g['median']:g}, max {g['max']}")
    for key, label in (("handwritten_only", "hand-written training phrasings only"),
                       ("with_generated", "hand-written + generated (what training draws)")):
        r = report[key]
        print(f"{label}: {r['training_phrasings']} training phrasings; nearest neighbour in another intent "
              f"{r['confused']}/{r['heldout']} = {100 * r['share']:.1f} %; near copies (own intent, <= 1 word "
              f"away) {r['near_copies']}/{r['heldout']}")
        if a.verbose:
            for row in r["rows"]:
                mark = "OTHER" if row["confused"] else "own  "
                (own_text, own_score), ((other_intent, other_text), other_score) = row["own"], row["other"]
                print(f"  {mark} {row['intent']:18s} {row['text']}\n"
                      f"        own   {own_score:.3f} {own_text}\n"
                      f"        other {other_score:.3f} {other_intent}: {other_text}"
                      + ("\n        (near copy)" if row["near_copy"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
