"""The support judge on crafted strings."""

from __future__ import annotations

from generation.support import cited_sentences, is_supported, support_score

PASSAGE = ("**Pipeline coverage.** You need several multiples of the quota in qualified pipeline because most "
           "deals don't close; thin coverage now is a missed number later.")


def test_quoted_sentence_with_framing_is_supported() -> None:
    sentence = "The way I think about it: You need several multiples of the quota in qualified pipeline. [1]"
    assert support_score(sentence, PASSAGE) > 0.7 and is_supported(sentence, PASSAGE)


def test_unrelated_sentence_is_not_supported() -> None:
    assert not is_supported("Always offer a 40% discount to close before quarter end.", PASSAGE)
    assert support_score("", PASSAGE) == 0.0


def test_cited_sentences_pairs_sentences_with_markers() -> None:
    answer = "First claim here. [1] Second claim [2][3] and an uncited tail sentence."
    assert [(s.text, s.markers) for s in cited_sentences(answer)] == [
        ("First claim here.", [1]),
        ("Second claim", [2, 3]),
        ("and an uncited tail sentence.", []),
    ]
