"""Reference-based text metrics shared by the evaluation steps.

ROUGE-L (Lin, 2004) scores the longest common subsequence (LCS) of word tokens between a
candidate and a reference: precision = LCS / candidate length, recall = LCS / reference
length, F1 their harmonic mean. Tokens are lower-cased runs of letters/digits, so punctuation
and layout do not count. The LCS is the classic O(n*m) dynamic programme, one row at a time.
"""

from __future__ import annotations

import re
from statistics import fmean

WORD = re.compile(r"[^\W_]+", re.UNICODE)


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists."""
    if len(a) < len(b):
        a, b = b, a  # the row is the shorter list: O(min(n, m)) memory
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b, 1):
            current.append(
                previous[j - 1] + 1 if token == other else max(previous[j], current[j - 1])
            )
        previous = current
    return previous[-1]


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 in [0, 1]; 0 when either side has no words."""
    cand, ref = words(candidate), words(reference)
    if not cand or not ref:
        return 0.0
    common = lcs_length(cand, ref)
    if common == 0:
        return 0.0
    precision, recall = common / len(cand), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def mean_rouge_l(candidates: list[str], references: list[str]) -> float:
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} references")
    return (
        fmean(rouge_l(c, r) for c, r in zip(candidates, references, strict=False))
        if candidates
        else 0.0
    )
