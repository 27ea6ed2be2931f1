"""PTB-style caption tokenisation, as the COCO caption evaluation applies it.

The reference pipeline (pycocoevalcap) runs Stanford's ``PTBTokenizer -preserveLines
-lowerCase`` and then drops punctuation tokens. This is a pure-Python rewrite of the rules that
matter for captions (lower-casing, clitics ``n't 's 're 've 'll 'd 'm``, ``cannot`` -> ``can
not``, bracket tokens ``-lrb-``, quotes and sentence punctuation dropped, numbers such as
``3.5`` / ``1,000`` / ``10:30`` and acronyms such as ``u.s.`` kept whole); the tests compare it
token for token with the Java tokenizer on a shared caption set.
"""

from __future__ import annotations

import re

# Tokens the COCO evaluation removes after PTB tokenisation (lower-cased brackets survive, as in
# the reference, because its list holds the upper-case forms only).
PUNCTUATIONS = frozenset(
    [
        "''",
        "'",
        "``",
        "`",
        "-LRB-",
        "-RRB-",
        "-LCB-",
        "-RCB-",
        ".",
        "?",
        "!",
        ",",
        ":",
        "-",
        "--",
        "...",
        ";",
    ]
)
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_SPLIT_WORDS = {
    "cannot": ("can", "not"),
    "gonna": ("gon", "na"),
    "gotta": ("got", "ta"),
    "wanna": ("wan", "na"),
    "lemme": ("lem", "me"),
    "gimme": ("gim", "me"),
}
_CLITIC = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")
_ACRONYM = re.compile(r"^(?:[a-z]\.){2,}$|^(?:mr|mrs|ms|dr|st|jr|sr|vs|etc|inc|co|no)\.$")
_NUMBER = re.compile(r"^[+-]?\d[\d,.:/]*\d$")
_LEAD = "([{\"'`$#"
_TRAIL = ")]}\"',.!?;:%"


def _split_word(word: str) -> list[str]:
    """One whitespace-free chunk -> PTB tokens (already lower-cased)."""
    lead: list[str] = []
    trail: list[str] = []
    while word and word[0] in _LEAD:
        lead.append(word[0])
        word = word[1:]
    while word and (word[-1] in _TRAIL or word.endswith("...")):
        run = re.search(r"[!?]{2,}$", word)
        if run:  # PTB keeps a run such as "?!" as one token
            trail.insert(0, run[0])
            word = word[: run.start()]
        elif word.endswith("..."):
            trail.insert(0, "...")
            word = word[:-3]
        elif word[-1] == "." and (_ACRONYM.match(word) or _NUMBER.match(word)):
            break
        else:
            trail.insert(0, word[-1])
            word = word[:-1]
    core: list[str] = []
    if word:
        if _NUMBER.match(word):
            core = [word]
        else:
            # internal sentence punctuation (no spaces around it) splits the chunk.
            parts = [p for p in re.split(r"(\.\.\.|--|[,;!?\"()\[\]{}])", word) if p]
            for part in parts:
                if part in _BRACKETS or part in {"...", "--", ",", ";", "!", "?", '"'}:
                    core.append(part)
                    continue
                if part in _SPLIT_WORDS:
                    core.extend(_SPLIT_WORDS[part])
                    continue
                match = _CLITIC.match(part)
                if match and match[1] not in {"'", ""}:
                    stem, clitic = match[1], match[2]
                    if clitic == "n't" and stem in {"ca", "wo", "ai"} | {""}:
                        core.extend([stem, clitic] if stem else [clitic])
                    else:
                        core.extend([stem, clitic])
                else:
                    core.append(part)
    return [*lead, *core, *trail]


def _normalise(tok: str) -> str:
    if tok in _BRACKETS:
        return _BRACKETS[tok]
    if tok == '"':
        return "''"
    return tok


def ptb_tokenize(text: str) -> list[str]:
    """Lower-cased PTB tokens of ``text`` with the COCO evaluation's punctuation removed."""
    tokens: list[str] = []
    for chunk in text.replace("\n", " ").lower().split():
        tokens.extend(_normalise(t) for t in _split_word(chunk))
    return [t for t in tokens if t not in PUNCTUATIONS]


def tokenize_captions(captions: dict[object, list[str]]) -> dict[object, list[str]]:
    """``{key: [caption, ...]}`` -> ``{key: ["tok tok ...", ...]}`` (pycocoevalcap's layout)."""
    return {k: [" ".join(ptb_tokenize(c)) for c in v] for k, v in captions.items()}
