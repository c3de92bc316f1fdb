"""A second reading of a text with common obfuscation undone, for detectors.

Attacks are written to slip past a model: leetspeak (`1gn0r3 4ll rul3s`), letters spaced or
dotted apart (`i g n o r e`, `i.g.n.o.r.e`), Cyrillic or Greek look-alikes inside Latin words
(`іgnоrе`), and instructions sent base64-encoded. A detector reads the text as written and, when
undoing these changes the text, also the undone reading; the riskier reading speaks for the text.
Only what looks obfuscated is changed: plain words, numbers and whole words in another script
(Russian, Greek, Chinese text) are left as they are.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata

from anyascii import anyascii

LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i", "|": "l"})
# A run of letters and leet characters; it is leetspeak only if it holds both (a plain number or
# a price is not). Checked per run rather than by look-aheads, which rescan to the end of a long
# unbroken string from every position (quadratic: seconds for one 32,000-character text).
LEET_WORD = re.compile(r"[A-Za-z0134579@$!|']{3,}")
LETTER, LEET_CHARACTER = re.compile(r"[A-Za-z]"), re.compile(r"[013457@$!|]")
# Four or more single letters with one separator between each: `i g n o r e`, `i.g.n.o.r.e`, `i-g-n`.
SPACED = re.compile(r"\b(?:[^\W\d_][ .\-_*/]){3,}[^\W\d_]\b")
BASE64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
WORD = re.compile(r"\w+")


def _mixed_script(word: str) -> bool:
    """A word that mixes Latin letters with letters of another script (a homoglyph trick)."""
    scripts = {unicodedata.name(c, "").split(" ")[0] for c in word if c.isalpha()}
    return "LATIN" in scripts and len(scripts) > 1


def _homoglyphs(text: str) -> str:
    return WORD.sub(lambda m: anyascii(m.group(0)) if _mixed_script(m.group(0)) else m.group(0), text)


def _leet(text: str) -> str:
    def undo(match: re.Match) -> str:
        word = match.group(0)
        return word.translate(LEET) if LETTER.search(word) and LEET_CHARACTER.search(word) else word

    return LEET_WORD.sub(undo, text)


def _spaced(text: str) -> str:
    return SPACED.sub(lambda m: re.sub(r"[ .\-_*/]", "", m.group(0)), text)


def _decoded_base64(text: str) -> list[str]:
    """Texts hidden as base64 in `text` (those that decode to printable UTF-8)."""
    found = []
    for token in BASE64.findall(text):
        try:
            decoded = base64.b64decode(token + "=" * (-len(token) % 4), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if decoded.strip() and sum(c.isprintable() or c.isspace() for c in decoded) / len(decoded) > 0.95:
            found.append(decoded)
    return found


def deobfuscated(text: str) -> str | None:
    """The text with obfuscation undone (NFKC, homoglyphs, spacing, leetspeak, base64 payloads
    appended), or None when nothing changed."""
    undone = _leet(_spaced(_homoglyphs(unicodedata.normalize("NFKC", text))))
    hidden = _decoded_base64(text)
    if hidden:
        undone = "\n".join([undone, *hidden])
    return undone if undone != text else None
