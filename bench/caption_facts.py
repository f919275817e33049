"""Does the demo model's caption of a synthetic clip name that clip's facts? Per checkpoint, per split.

For every clip of a split the model captions it from audio+video exactly as evaluation and serving do (beam 3,
GNMT length penalty 0.6, no repeated 3-grams, 30 tokens), then reads the caption's words against the clip's
ground truth in the manifest (``attributes``): a fact counts as right when the caption names the clip's value and
no other value of that fact (a caption naming two shapes is wrong). ``sound`` is right when the caption names the
clip's nonverbal sound kind (tone, hum, clicks, noise; none for speech-only clips) and the spoken digit (none for
clips without speech), nothing else; ``all`` when colour, shape and sound are right; ``motion`` when the caption names
the clip's direction and no other; ``sentence`` when all four are right (every fact a synthetic caption states).

    uv run python bench/caption_facts.py --run before=artifacts/train/small:data/preprocessed \\
        --run after=/tmp/new/train:/tmp/new/preprocessed --splits test train --out bench/results/caption_facts

Each ``--run NAME=CHECKPOINT:DATA`` scores one checkpoint (a run folder means its newest checkpoint) on the clips of
its own preprocessed data (whose index names the manifest). The JSON and Markdown results go to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from machine import machine, machine_table

from avlops.data.manifest import read_manifest
from avlops.data.synth import COLOURS, SHAPES, WORDS
from avlops.data.synth.specs import MOTION_PHRASES
from avlops.evaluation.captioning import decode_tokens
from avlops.evaluation.checkpoint import load_for_evaluation
from avlops.evaluation.dataset import load_eval_set, resolve_manifest
from avlops.modality import Modality
from avlops.preprocessing.shards import read_index
from avlops.task import generate_captions

#: The words captions use for each nonverbal sound kind (avlops.data.synth.specs.SOUND_PHRASES).
SOUND_WORDS: dict[str, tuple[str, ...]] = {
    "tone": ("tone",),
    "hum": ("hum", "hums", "humming"),
    "clicks": ("click", "clicks", "clicking"),
    "noise": ("noise", "static"),
}


def _motion_words() -> dict[str, frozenset[str]]:
    """The words only one direction's phrases use (avlops.data.synth.specs.MOTION_PHRASES): "left", "rises", ..."""
    words = {m: frozenset(w for phrase in phrases for w in phrase.split()) for m, phrases in MOTION_PHRASES.items()}
    return {m: ws - frozenset().union(*(o for n, o in words.items() if n != m)) for m, ws in words.items()}


#: The words captions use for each direction.
MOTION_WORDS: dict[str, frozenset[str]] = _motion_words()
FACTS = ("colour", "shape", "sound", "all", "motion", "sentence")
#: How many test captions per run the Markdown lists.
LISTED = 12


def named(caption: str) -> dict[str, set[str]]:
    """The values of each fact a caption names (whole words only: 'someone' does not name 'one')."""
    words = set(re.findall(r"[a-z]+", caption.lower()))
    return {
        "colour": {c for c in COLOURS if c in words},
        "shape": {s for s in SHAPES if s in words},
        "sound": {k for k, ws in SOUND_WORDS.items() if words & set(ws)},
        "word": {w for w in WORDS if w in words},
        "motion": {m for m, ws in MOTION_WORDS.items() if words & set(ws)},
    }


def judge(caption: str, attributes: Mapping[str, Any]) -> dict[str, bool]:
    """Right or wrong per fact for one caption against one clip's ground truth."""
    said = named(caption)
    sound = attributes.get("sound", "none")
    truth_sound = set() if sound == "none" else {str(sound)}
    truth_word = {str(attributes["word"])} if attributes.get("word") else set()
    out = {
        "colour": said["colour"] == {attributes["colour"]},
        "shape": said["shape"] == {attributes["shape"]},
        "sound": said["sound"] == truth_sound and said["word"] == truth_word,
    }
    out["all"] = all(out.values())
    out["motion"] = said["motion"] == {attributes["motion"]}
    out["sentence"] = out["all"] and out["motion"]
    return out


@torch.no_grad()
def score_run(checkpoint: str, data: str, splits: Sequence[str]) -> dict[str, Any]:
    loaded = load_for_evaluation(checkpoint, "cpu")
    manifest = resolve_manifest(Path(data), read_index(Path(data)).get("manifest"))
    attributes = {e.record.clip_id: e.record.attributes for e in read_manifest(manifest)[0]}
    result: dict[str, Any] = {"checkpoint": str(loaded.path), "step": loaded.step, "data": data, "splits": {}}
    for split in splits:
        clips = load_eval_set(data, loaded.model.cfg, split=split, model_name=None)
        captions: dict[str, str] = {}
        for idx, batch in clips.batches(clips.clips_with(Modality.AUDIOVISUAL), 32):
            tokens = generate_captions(
                loaded.model, batch, loaded.objective, Modality.AUDIOVISUAL.group, 30, 3, no_repeat_ngram=3
            )
            captions.update(zip((clips.clip_ids[int(i)] for i in idx), decode_tokens(tokens), strict=True))
        verdicts = {c: judge(text, attributes[c]) for c, text in captions.items()}
        counts = {f: sum(v[f] for v in verdicts.values()) for f in FACTS}
        speech = [c for c in captions if attributes[c].get("word")]
        result["splits"][split] = {
            "clips": len(captions),
            "right": counts,
            "word_right": sum(named(captions[c])["word"] == {attributes[c]["word"]} for c in speech),
            "speech_clips": len(speech),
            "captions": {c: {"caption": captions[c], **verdicts[c]} for c in sorted(captions)},
        }
        print(f"{checkpoint} {split}: " + ", ".join(f"{f} {counts[f]}/{len(captions)}" for f in FACTS), flush=True)
    return result


def markdown(results: Mapping[str, Any]) -> str:
    notes = [f"- {name}: {run['note']}" for name, run in results["runs"].items() if run.get("note")]
    lines = [
        "# Caption facts: does the caption of a synthetic clip name its colour, shape and sound?",
        "",
        f"Measured {results['measured']} with `uv run python bench/caption_facts.py` (beam 3, no repeated 3-grams).",
        "A fact is right when the caption names the clip's value and no other; sound = the sound kind and the spoken "
        "digit.",
        "",
        *notes,
        *([""] if notes else []),
        "| run | split | clips | colour | shape | sound | spoken digit | all three | motion | all four |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, run in results["runs"].items():
        for split, s in run["splits"].items():
            n, r = s["clips"], s["right"]
            lines.append(
                f"| {name} | {split} | {n} | {r['colour']} | {r['shape']} | {r['sound']} | "
                f"{s['word_right']}/{s['speech_clips']} | {r['all']} | {r.get('motion', '–')} | "
                f"{r.get('sentence', '–')} |"
            )
    splits = sorted({split for run in results["runs"].values() for split in run["splits"]})
    if len(splits) > 1:
        lines += ["", f"Together ({' + '.join(splits)}), % of clips:", ""]
        lines += [
            "| run | clips | colour | shape | sound | all three | motion | all four |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, run in results["runs"].items():
            n = sum(s["clips"] for s in run["splits"].values())
            pct = {f: 100 * sum(s["right"].get(f, 0) for s in run["splits"].values()) / max(n, 1) for f in FACTS}
            lines.append(f"| {name} | {n} | " + " | ".join(f"{pct[f]:.0f}" for f in FACTS) + " |")
    lines += ["", f"Test captions (the first {LISTED} per run):", ""]
    for name, run in results["runs"].items():
        for c, v in list(run["splits"].get("test", {}).get("captions", {}).items())[:LISTED]:
            marks = " ".join(f for f in ("colour", "shape", "sound", "motion") if not v.get(f, True))
            lines.append(f'- {name} {c}: "{v["caption"]}"' + (f" (wrong: {marks})" if marks else ""))
    lines += ["", *machine_table(results["machine"])]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", required=True, help="NAME=CHECKPOINT:DATA")
    parser.add_argument("--note", action="append", default=[], help="NAME=TEXT: what run NAME is (the recipe)")
    parser.add_argument("--splits", nargs="+", default=["test"])
    parser.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)
    runs: dict[str, Any] = {}
    for spec in args.run:
        name, _, rest = spec.partition("=")
        checkpoint, _, data = rest.rpartition(":")
        runs[name] = score_run(checkpoint, data, args.splits)
    for note in args.note:
        name, _, text = note.partition("=")
        runs[name]["note"] = text
    results = {"measured": datetime.now(UTC).isoformat(timespec="seconds"), "runs": runs, "machine": machine()}
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
        out.with_suffix(".md").write_text(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
