"""LongBench scoring, equal to the official ``LongBench/metrics.py`` and ``eval.py``
(THUDM/LongBench, commit 2e00731) on the same predictions.

Each metric follows the official definition; ROUGE-L and Chinese segmentation use the same
libraries the official code uses (``rouge`` 1.0.1, ``jieba`` 0.42.1). ``code_sim`` is
fuzzywuzzy's ``fuzz.ratio`` as the official requirements install it (without
python-Levenshtein, i.e. difflib's ``SequenceMatcher``), written out here so that we do not
depend on a GPL package: ``round(100 · ratio)``, 100 for equal strings, 0 if one is empty.
"""

from __future__ import annotations

import difflib
import re
import string
from collections import Counter
from collections.abc import Sequence

from spark_bench.data.longbench import FIRST_LINE_TASKS, task

_ZH_PUNCTUATION = (  # the official list of Chinese punctuation
    "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」"
    "『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏."
)
_EN_PUNCTUATION = set(string.punctuation)
_ALL_PUNCTUATION = set(string.punctuation + _ZH_PUNCTUATION)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation, drop articles, collapse whitespace (SQuAD style)."""
    text = "".join(ch for ch in text.lower() if ch not in _EN_PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def normalize_zh_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _ALL_PUNCTUATION)
    return "".join(text.split())


def _f1(prediction: Sequence[str], truth: Sequence[str]) -> float:
    same = sum((Counter(prediction) & Counter(truth)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(prediction), same / len(truth)
    return 2 * precision * recall / (precision + recall)


def qa_f1(prediction: str, truth: str, all_classes=None) -> float:
    return _f1(normalize_answer(prediction).split(), normalize_answer(truth).split())


def _zh_tokens(text: str) -> list[str]:
    import jieba

    tokens = (normalize_zh_answer(t) for t in jieba.cut(text, cut_all=False))
    return [t for t in tokens if t]


def qa_f1_zh(prediction: str, truth: str, all_classes=None) -> float:
    return _f1(_zh_tokens(prediction), _zh_tokens(truth))


def rouge(prediction: str, truth: str, all_classes=None) -> float:
    """ROUGE-L F of the ``rouge`` package; 0 where it cannot score (empty text), as officially."""
    from rouge import Rouge

    try:
        return Rouge().get_scores([prediction], [truth], avg=True)["rouge-l"]["f"]
    except Exception:  # the official code maps any failure (e.g. an empty hypothesis) to 0
        return 0.0


def rouge_zh(prediction: str, truth: str, all_classes=None) -> float:
    import jieba

    return rouge(" ".join(jieba.cut(prediction, cut_all=False)), " ".join(jieba.cut(truth, cut_all=False)))


def _share_of_numbers(prediction: str, wanted: str) -> float:
    numbers = re.findall(r"\d+", prediction)
    return 0.0 if not numbers else sum(n == wanted for n in numbers) / len(numbers)


def count(prediction: str, truth: str, all_classes=None) -> float:
    return _share_of_numbers(prediction, str(truth))


def retrieval(prediction: str, truth: str, all_classes=None) -> float:
    return _share_of_numbers(prediction, re.findall(r"Paragraph (\d+)", truth)[0])


def retrieval_zh(prediction: str, truth: str, all_classes=None) -> float:
    return _share_of_numbers(prediction, re.findall(r"段落(\d+)", truth)[0])


def _fuzz_ratio(a: str, b: str) -> int:
    if a == b:
        return 100
    if not a or not b:
        return 0
    return round(100 * difflib.SequenceMatcher(None, a, b).ratio())  # fuzzywuzzy's intr()


def code_sim(prediction: str, truth: str, all_classes=None) -> float:
    """Similarity of the first line that is not a comment or a code fence."""
    line = next(
        (x for x in prediction.lstrip("\n").split("\n") if "`" not in x and "#" not in x and "//" not in x),
        "",
    )
    return _fuzz_ratio(line, truth) / 100


def classification(prediction: str, truth: str, all_classes=None) -> float:
    """1 / (classes named) if the true class is named, where a class contained in the true
    class's name does not count against it (the official loop, including its skip of the
    element after a removed one)."""
    matches = [name for name in all_classes if name in prediction]
    index = 0
    while index < len(matches):  # the official for-loop removes while iterating: after a
        name = matches[index]  # removal, the next element is skipped; this loop does the same
        if name in truth and name != truth:
            matches.remove(name)
        index += 1
    return 1.0 / len(matches) if truth in matches else 0.0


METRICS = {
    "qa_f1": qa_f1,
    "qa_f1_zh": qa_f1_zh,
    "rouge": rouge,
    "rouge_zh": rouge_zh,
    "classification": classification,
    "retrieval": retrieval,
    "retrieval_zh": retrieval_zh,
    "count": count,
    "code_sim": code_sim,
}


def sample_score(name: str, prediction: str, answers: Sequence[str], all_classes=None) -> float:
    """One sample: the best score over its reference answers (0-1)."""
    if name in FIRST_LINE_TASKS:
        prediction = prediction.lstrip("\n").split("\n")[0]
    metric = METRICS[task(name).metric]
    return max([0.0, *(metric(prediction, truth, all_classes=all_classes) for truth in answers)])


def score(name: str, predictions: Sequence[str], answers: Sequence[Sequence[str]], all_classes=None) -> float:
    """The task score, 0-100 rounded to 2 decimals, as official ``eval.py`` ``scorer``."""
    total = sum(sample_score(name, p, a, all_classes) for p, a in zip(predictions, answers, strict=True))
    return round(100 * total / len(predictions), 2)
