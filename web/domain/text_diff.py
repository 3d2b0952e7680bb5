"""A word diff of an edited message against its original, for the review screen: a list of
parts (kept, removed, added) that the template draws as <del>/<ins>. Plain text in, plain text
out: escaping is the template's (Jinja autoescape), so markup in a message stays text.
Imports nothing of flowgate."""

from __future__ import annotations

import difflib
import re
from typing import Literal, NamedTuple

# A word with the spaces after it, so a part keeps the text's own spacing and line breaks.
_WORDS = re.compile(r"\S+\s*|\s+")


class DiffPart(NamedTuple):
    kind: Literal["same", "removed", "added"]
    text: str


def word_diff(original: str, new: str) -> list[DiffPart]:
    """`original` -> `new` word by word; joining the parts that are not `added` gives
    `original` back, joining those that are not `removed` gives `new`."""
    old_words = _WORDS.findall(original)
    new_words = _WORDS.findall(new)
    matcher = difflib.SequenceMatcher(None, old_words, new_words, autojunk=False)
    parts: list[DiffPart] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            parts.append(DiffPart("same", "".join(old_words[i1:i2])))
            continue
        if i2 > i1:
            parts.append(DiffPart("removed", "".join(old_words[i1:i2])))
        if j2 > j1:
            parts.append(DiffPart("added", "".join(new_words[j1:j2])))
    return parts
