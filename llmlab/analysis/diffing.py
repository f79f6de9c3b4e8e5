"""Word-level differences between two texts, as plain-text markers or highlighted HTML.

Used by ``ll.diff`` to put two sweeps' outputs side by side. The texts are split by
:func:`llmlab.text.tokenize` into words (each CJK character on its own), whitespace runs and single
punctuation marks, so joining the tokens gives the text back exactly;
:class:`difflib.SequenceMatcher` (standard library, no junk heuristic, so repeated words in long
outputs are still matched) finds the longest matching runs. Plain text uses git's
``--word-diff=plain`` markers: ``[-removed-]`` and ``{+added+}``.
"""

from __future__ import annotations

import difflib
import html
from typing import Literal

from llmlab.text import tokenize

__all__ = ["WordOp", "html_pair", "mark_plain", "word_ops"]

#: (tag, text in a, text in b); tag is "equal", "delete", "insert" or "replace".
WordOp = tuple[Literal["equal", "delete", "insert", "replace"], str, str]

_DEL_STYLE = "background:#ffd7d5;color:#82071e;text-decoration:line-through"
_INS_STYLE = "background:#ccffd8;color:#055d20;text-decoration:none"


def word_ops(a: str | None, b: str | None) -> list[WordOp]:
    """The edit script turning ``a`` into ``b``, word by word.

    Args:
        a: the old text (None counts as empty).
        b: the new text (None counts as empty).

    Returns:
        A list of ``(tag, a_text, b_text)`` covering both texts in order; adjacent equal runs are
        merged, so ``"".join(a_text)`` is ``a`` and ``"".join(b_text)`` is ``b``. Changes kept
        apart only by whitespace become one replacement (``[-a computer-]{+their DNA+}``, not
        ``[-a-]{+their+} [-computer-]{+DNA+}``), as git's word diff reads.
    """
    ta, tb = tokenize(a), tokenize(b)
    matcher = difflib.SequenceMatcher(None, ta, tb, autojunk=False)
    ops: list[WordOp] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        op: WordOp = (tag, "".join(ta[i1:i2]), "".join(tb[j1:j2]))
        if (
            tag != "equal"
            and len(ops) >= 2
            and ops[-1][0] == "equal"
            and ops[-1][1].isspace()
            and ops[-2][0] != "equal"
        ):
            gap, prev = ops[-1], ops[-2]
            left, right = prev[1] + gap[1] + op[1], prev[2] + gap[2] + op[2]
            if left.strip() and right.strip():  # both sides keep real words: one readable replacement
                del ops[-2:]
                op = ("replace", left, right)
        ops.append(op)
    return ops


def _split_edge_space(text: str) -> tuple[str, str, str]:
    """(leading whitespace, core, trailing whitespace): markers hug the words, not the spaces."""
    core = text.strip()
    if not core:
        return text, "", ""
    start = text.index(core)
    return text[:start], core, text[start + len(core) :]


def mark_plain(a: str | None, b: str | None) -> str:
    """One text with git-style word-diff markers: ``the [-quick-]{+slow+} fox``."""
    out: list[str] = []
    for tag, ta, tb in word_ops(a, b):
        if tag == "equal":
            out.append(ta)
            continue
        if tag == "replace":
            lead_a, core_a, trail_a = _split_edge_space(ta)
            lead_b, core_b, trail_b = _split_edge_space(tb)
            if core_a and core_b and lead_a == lead_b and trail_a == trail_b:
                out.append(f"{lead_a}[-{core_a}-]{{+{core_b}+}}{trail_a}")
                continue
        if ta:
            lead, core, trail = _split_edge_space(ta)
            out.append(f"{lead}[-{core}-]{trail}" if core else f"[-{ta}-]")
        if tb:
            lead, core, trail = _split_edge_space(tb)
            out.append(f"{lead}{{+{core}+}}{trail}" if core else f"{{+{tb}+}}")
    return "".join(out)


def html_pair(a: str | None, b: str | None) -> tuple[str, str]:
    """Escaped HTML of both texts: words only in ``a`` in a red ``<del>``, only in ``b`` in a green ``<ins>``."""
    left: list[str] = []
    right: list[str] = []
    for tag, ta, tb in word_ops(a, b):
        if tag == "equal":
            left.append(html.escape(ta))
            right.append(html.escape(tb))
            continue
        if ta:
            left.append(f'<del style="{_DEL_STYLE}">{html.escape(ta)}</del>')
        if tb:
            right.append(f'<ins style="{_INS_STYLE}">{html.escape(tb)}</ins>')
    return "".join(left), "".join(right)
