"""Whether a sentence could be *mentioning* prohibited words rather than *using* them.

The classifier may overrule a lexicon hit ("这只基金不承诺保本" matches 保本) only where the rest of the sentence
gives it a reason to: a negation, a warning, a question, a report of what someone else says, or quotation
marks. Without one (保本保本保本…, 保本！) the words are used, whatever a classifier trained on many warnings
that name them thinks of the sentence. The matched words themselves are not searched: 稳赚不赔 carries its
own 不.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# 不过 / 不仅 / 不管 are conjunctions (however, not only, no matter), not negations: "确实有平仓线，不过…基本上是零风险的"
# uses 零风险, it does not deny it. 没错 / 不错 / 没问题 / 没毛病 / 错不了 affirm ("下周必涨停，听我的没错" uses 必涨).
# Reporting and enforcement words name a practice to stop it: 如有人承诺收益，请拨打举报电话; 因承诺保底被出具警示函;
# 保底条款会被认定无效 (the spent held-out sets' lexicon false positives had these and no cue above).
MENTION_CUES = re.compile(
    r"(?!不过|不仅|不管|没错|不错|没问题|没毛病|不会错)(?<!错)(?:不|没|别|非|勿|莫|未|否|谁|骗|假|小心|警惕|提醒|注意|谨防|防范|劝|宣传|声称|号称|所谓|说什么|听说|据说|"
    r"举报|投诉|如有|若有|倘若|要是有人|有人说|违规|违法|无效|处罚|警示|禁止|严禁|"
    r"[?？吗呢'\"“”‘’「」『』])"
)


def mention_cue(sentence: str, spans: Iterable[tuple[int, int]]) -> bool:
    """True when ``sentence``, with the lexicon's matched ``spans`` (start, end) blanked, has a mention cue."""
    chars = list(sentence)
    for start, end in spans:
        for i in range(max(0, start), min(len(chars), end)):
            chars[i] = " "
    return bool(MENTION_CUES.search("".join(chars)))
