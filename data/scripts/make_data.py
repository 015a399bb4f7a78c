"""Build the generated data of the repository: ``python data/scripts/make_data.py [--out DIR]``.

``make data`` runs this script. It writes, into ``--out`` (default: the data/ folder):

- ``tiny_world/world.json``, ``train.txt``, ``val.txt``, ``probes.jsonl``: the synthetic
  world and its corpus (``shared.tiny_world``), identical bytes on every machine;
- ``python_docs/train.txt``, ``val.txt``: CPython's own documentation text
  (``shared.python_corpus``), identical bytes on the same Python version and platform;
- ``instructions/train.json``, ``test.json``, ``val.json``: instruction data about the tiny
  world (``shared.instruction_data``) in the Alpaca fields plus kind, answer and style;
- ``preferences/train.json``, ``test.json``, ``val.json``: preference pairs (prompt, chosen,
  rejected) built on those instructions by rule (``shared.preference_data``);
- ``MANIFEST.json``: size, character count and sha256 of every generated file, so a test
  can check that a fresh build reproduces the committed files.

Every file is written as UTF-8 with "\\n" newlines, atomically (a temporary file in the same
folder, then ``os.replace``), so an interrupted run never leaves a half-written corpus.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from pathlib import Path

from common import DATA_DIR

from shared import bpe, instruction_data, preference_data, python_corpus, tiny_world
from shared.files import write_json, write_text

WORLD_SEED = 0  # which people exist
CORPUS_SEED = 0  # which texts describe them
PYTHON_DOCS_SEED = 0  # which documents go to val
INSTRUCTION_SEED = 0  # which questions are asked, which people are held out
PREFERENCE_SEED = 0  # which wrong answers and dispreferred styles the pairs use
# Folders whose files the manifest records; a new build step adds its folder here.
GENERATED_DIRS = ["tiny_world", "python_docs", "tokenizer", "instructions", "preferences"]


def build_tiny_world(out: Path) -> None:
    """The world, its train/val corpus and one completion probe per fact."""
    world = tiny_world.make_world(seed=WORLD_SEED)
    folder = out / "tiny_world"
    write_json(folder / "world.json", world.to_dict())
    for split, text in tiny_world.make_splits(world, seed=CORPUS_SEED).items():
        write_text(folder / f"{split}.txt", text)
    lines = [
        json.dumps(dataclasses.asdict(p), sort_keys=True) for p in tiny_world.fact_probes(world)
    ]
    write_text(folder / "probes.jsonl", "\n".join(lines) + "\n")


def build_instructions(out: Path) -> None:
    """Instruction entries about the tiny world and preference pairs built on them, one
    JSON list per split."""
    world = tiny_world.make_world(seed=WORLD_SEED)
    entries = instruction_data.make_instruction_data(world, seed=INSTRUCTION_SEED)
    for split in ("train", "test", "val"):
        write_json(
            out / "instructions" / f"{split}.json", [e for e in entries if e["split"] == split]
        )
    pairs = preference_data.make_preference_pairs(entries, world, seed=PREFERENCE_SEED)
    for split in ("train", "test", "val"):
        write_json(out / "preferences" / f"{split}.json", [p for p in pairs if p["split"] == split])


def build_python_docs(out: Path, force: bool = False) -> dict:
    """CPython's reference topics and docstrings, split by document into train/val.

    Returns the build (Python version, platform) that made the files. The text depends on
    the Python version and platform. The committed files were made on
    the build recorded in MANIFEST.json; on another build they are kept (unless ``force``),
    because the tokenizer and the released checkpoints were made from exactly those bytes.
    """
    made = committed_python_docs_build(out)
    here = python_corpus.build_info()
    if made is not None and made != here and not force:
        print(
            f"python_docs: keeping the committed files, made with {made}; this is {here} "
            "(use --force-python-docs to rebuild them, which changes the tokenizer too)"
        )
        return made
    for split, text in python_corpus.make_python_splits(seed=PYTHON_DOCS_SEED).items():
        write_text(out / "python_docs" / f"{split}.txt", text)
    return here


def committed_python_docs_build(out: Path) -> dict | None:
    """The build that made ``out``'s python_docs files, if they and a manifest exist."""
    manifest = out / "MANIFEST.json"
    files = [out / "python_docs" / f"{split}.txt" for split in ("train", "val")]
    if not manifest.exists() or not all(f.exists() for f in files):
        return None
    return json.loads(manifest.read_text(encoding="utf-8")).get("python_docs")


def build_corpora(out: Path, force_python_docs: bool = False) -> dict:
    """Every text corpus (the inputs of the tokenizer and of the training chapters).

    Returns the build that made python_docs, for the manifest.
    """
    build_tiny_world(out)
    build_instructions(out)
    return build_python_docs(out, force=force_python_docs)


def build_tokenizer(out: Path) -> None:
    """Train the project's byte-level BPE (4,096 tokens) on the corpora in ``out``."""
    start = time.perf_counter()
    tokenizer = bpe.train_project_tokenizer(out)
    tokenizer.save(out / "tokenizer" / bpe.TOKENIZER_PATH.name)
    print(f"tokenizer: {tokenizer.vocab_size:,} tokens in {time.perf_counter() - start:.1f} s")


# ---------------------------------------------------------------------- manifest ----
def file_record(path: Path) -> dict:
    """Size in bytes, sha256 and (for UTF-8 text) number of characters of one file."""
    data = path.read_bytes()
    try:
        chars = len(data.decode("utf-8"))
    except UnicodeDecodeError:
        chars = None  # binary files (checkpoints) have no character count
    return {"bytes": len(data), "chars": chars, "sha256": hashlib.sha256(data).hexdigest()}


def write_manifest(out: Path, python_docs_build: dict) -> dict:
    """Record every file under GENERATED_DIRS in ``out/MANIFEST.json`` and return the record."""
    files = {}
    for name in GENERATED_DIRS:
        for path in sorted((out / name).rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                files[path.relative_to(out).as_posix()] = file_record(path)
    manifest = {
        "files": files,
        "python_docs": python_docs_build,
        "seeds": {
            "corpus": CORPUS_SEED,
            "instructions": INSTRUCTION_SEED,
            "preferences": PREFERENCE_SEED,
            "python_docs": PYTHON_DOCS_SEED,
            "world": WORLD_SEED,
        },
    }
    write_json(out / "MANIFEST.json", manifest)
    return manifest


def print_summary(manifest: dict) -> None:
    """A short table: file, characters, megabytes."""
    print(f"{'file':<28} {'characters':>12} {'MB':>7}")
    for name, record in manifest["files"].items():
        chars = "-" if record["chars"] is None else f"{record['chars']:,}"
        print(f"{name:<28} {chars:>12} {record['bytes'] / 1e6:>7.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="output folder")
    parser.add_argument(
        "--force-python-docs",
        action="store_true",
        help="rebuild python_docs even on another Python build than the committed one",
    )
    args = parser.parse_args(argv)
    out = args.out.resolve()
    start = time.perf_counter()
    python_docs_build = build_corpora(out, force_python_docs=args.force_python_docs)
    build_tokenizer(out)
    manifest = write_manifest(out, python_docs_build)
    print_summary(manifest)
    print(f"wrote {out} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
