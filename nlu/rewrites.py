"""Extension-question candidates that need no trained model: spoken-style rewrites and thesaurus swaps.

FAQ standard questions are written the way a document is; callers ask the same thing in everyday
speech (咋开户, 佣金能降吗, 我想开个户，怎么弄). Both generators here only propose: every candidate goes
through the same filter and ranking as the ALBERT-sim beam (nlu.expansion.filter_and_rank), which
drops those the matcher places in another intent and near-copies of what the knowledge base has.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import re
from functools import lru_cache
from itertools import chain, zip_longest
from pathlib import Path
from typing import NamedTuple

from knowledge_base.errors import CallbotError


class Proposal(NamedTuple):
    """A raw candidate and the generator that proposed it."""

    text: str
    source: str  # beam | sample | rewrite | thesaurus


_CJK = re.compile(r"[\u4e00-\u9fff]")
_END = r"([?？!！。]?)$"  # the question's own closing mark, kept by the rules that rebuild the ending

# Spoken-style substitutions: regular expression → wordings that may replace the match (backreferences
# allowed). A rewrite applies one or two of them, so each rule must keep the question's meaning alone.
SPOKEN_RULES: dict[str, list[tuple[str, list[str]]]] = {
    # 怎么 is the written form; callers say 咋 / 怎样 / 如何, and 怎么办 as 咋办 / 咋整 / 该怎么办. 怎么样 only
    # where nothing follows (…怎么样？): before a verb (怎么样开立) it is not Chinese anyone says.
    "how": [
        (r"怎么办", ["咋办", "该怎么办", "怎么处理", "咋整"]),
        (r"怎么回事", ["咋回事"]),
        (r"怎么(?![办样回])", ["咋", "怎样", "如何"]),
        (r"怎么(?=[?？]?$)", ["怎么样"]),
        (r"(?<!么)怎样(?=的|[?？]?$)", ["怎么样", "什么样"]),  # 是怎样的 / 怎样？, not before a verb
    ],
    # 什么 → 啥 is the most frequent colloquial swap; definitional questions (什么是X) are asked back to
    # front (X是啥意思), 什么时候 as 啥时候 / 几时, 哪些 as 啥 / 什么, 多久 as 多长时间.
    "what": [
        (r"^什么是([^，,？?。]+)", [r"\1是什么", r"\1是啥意思", r"\1指的是什么"]),  # first clause only
        (r"是什么意思", ["是啥意思", "指的是什么", "怎么理解"]),
        (r"(?<![么的])是什么(?![时意])", ["是啥"]),
        # Only where 是什么 closes the question: 我是什么类型的投资者 is not 我指的是什么类型.
        (r"(?<![么的我你他她])是什么(?=[？?]?$)", ["指的是什么"]),
        (r"什么时候", ["啥时候", "几时"]),
        (r"(?<![为是])什么(?![时是样意])", ["啥"]),
        (r"哪些", ["啥", "什么", "哪几样"]),
        (r"多久", ["多长时间"]),
    ],
    # Yes/no questions: 能不能X / 可以X吗 / X吗 are interchangeable, and the final 吗 is often 不 or 么.
    "yes-no": [
        (r"能不能(.+?)" + _END, [r"能\1吗\2", r"可不可以\1\2", r"可以\1吗\2"]),
        (r"可以(.+?)吗" + _END, [r"能\1吗\2", r"能不能\1\2", r"可不可以\1\2"]),
        (r"吗" + _END, [r"不\1", r"么\1"]),
    ],
    # Everyday verbs for the formal ones the FAQ uses (需要 / 查询 / 办理 / 开通 / 变更 / 修改 …).
    "verbs": [
        (r"需要", ["要", "得"]),
        (r"查询", ["查", "查看", "查一下"]),
        (r"办理", ["办"]),
        (r"开通", ["开", "申请开通"]),
        (r"变更", ["更换", "换"]),
        (r"修改", ["改", "更改"]),
        (r"忘了", ["忘记了", "不记得了"]),
        (r"重置", ["重新设置", "找回"]),
        (r"取出", ["转出", "取出来"]),
        (r"登录不上", ["登不上", "登录不了", "无法登录"]),
    ],
    # Account words as callers say them: 证券账户 is 股票账户 / 证券户, and opening or closing one is 开户 / 销户.
    "account": [
        (r"开立证券账户", ["开证券账户", "开个股票账户", "开户"]),
        (r"注销证券账户", ["销户", "把证券账户销掉"]),
        (r"证券账户", ["股票账户", "证券户", "炒股账户"]),
        (r"转人工", ["找人工客服", "转人工服务"]),
    ],
    # Whole-question patterns: how callers put each type of question. 怎么X？ is also 我要X / X的流程是什么？,
    # 什么是X？ is 解释一下X, X怎么办？ is X该怎么处理？ A different sentence, the same request: these move a
    # question further from its written form than any word swap, so they survive the near-duplicate filter.
    "patterns": [
        (r"^怎么(?:进行)?([^，,？?]+)[？?]$", [r"\1怎么操作？", r"\1的流程是什么？", r"\1在哪里办理？", r"我要\1", r"\1要怎么弄？"]),
        (r"^([^，,？?]+)怎么(?:做|操作|使用)[？?]$", [r"\1的步骤是什么？", r"教我一下\1", r"\1在哪里操作？"]),
        (r"^([^，,？?]+?)(?:是)?怎么计算(?:的)?[？?]$", [r"\1怎么算？", r"\1的计算方法是什么？", r"\1是按什么算的？"]),
        (r"^([^，,？?]+)怎么办[？?]$", [r"\1该怎么处理？", r"\1怎么解决？", r"遇到\1的情况怎么办？"]),
        (r"^([^，,？?]+)是什么意思[？?]$", [r"解释一下\1", r"\1是什么概念？"]),
        (r"^什么是([^，,？?]+)[？?]$", [r"解释一下\1", r"\1是什么概念？"]),
        (r"^([^，,？?]+)是怎么回事[？?]$", [r"\1是什么原因？", r"为什么\1？"]),
        (r"^([^，,？?]+)有什么区别[？?]$", [r"\1的区别是什么？", r"\1有啥不一样？"]),
        (r"^([^，,？?]+)是多少[？?]$", [r"\1一般是多少？", r"\1有多少？"]),
        (r"^([^，,？?]+)有哪些([^，,？?]+)[？?]$", [r"\1都有什么\2？", r"\1包括哪些\2？"]),
        (r"^([^，,？?]+?)为什么([^，,？?]+)[？?]$", [r"\1\2是什么原因？", r"为啥\1\2？"]),
        (r"什么时候(?=能|到账|可)", ["多久", "几天后"]),
    ],
    # Market and product terms as callers say them: the FAQ writes the regulator's names (申购新股,
    # 融资融券, 国债逆回购), callers the trading floor's (打新, 两融, 逆回购). The matching encoder hardly
    # tells a particle or a question word apart (咋 / 怎么 score ≥ 0.98 in e5-small), so these content
    # words are what makes a rewrite a new wording rather than a near-copy.
    "terms": [
        (r"申购新股", ["打新", "申购新股票"]),
        (r"新股中签", ["打新中签", "新股中了"]),
        (r"中签", ["中了", "抽中"]),
        (r"缴款", ["交钱", "缴费"]),
        (r"融资融券", ["两融", "融资融券业务"]),
        (r"国债逆回购", ["逆回购"]),  # not 国债回购: that is the borrower's side
        (r"可转债", ["转债", "可转换债券"]),
        (r"银证转账", ["银行转证券", "银转证"]),
        (r"第三方存管银行", ["存管银行", "绑定的银行"]),
        (r"佣金费率", ["手续费率", "佣金"]),
        (r"佣金", ["手续费", "交易佣金"]),
        (r"买卖股票", ["炒股", "买股票卖股票"]),
        (r"卖出股票后资金", ["卖了股票，钱", "股票卖出后钱"]),
        (r"资金(?!密码)", ["钱"]),  # 资金密码 is the name of a password
        (r"到账", ["到账户", "打到账上"]),
        (r"手机App", ["手机软件", "手机上的App", "APP"]),
        (r"手机号", ["电话号码", "手机号码"]),
        (r"过期", ["到期", "失效"]),
        (r"风险测评", ["风险评估", "风测"]),
        (r"对账单", ["账单", "资金对账单"]),
        (r"交割单", ["成交记录", "交割记录"]),
        (r"平仓线", ["强平线", "平仓的线"]),
        (r"利率", ["利息"]),
        (r"交易权限", ["权限", "交易资格"]),
        (r"分红", ["派息", "分红派息"]),
        (r"股息红利税", ["红利税", "分红的税"]),
        (r"停牌", ["暂停交易", "停牌了"]),
        (r"涨跌幅限制", ["涨跌停限制", "涨停跌停"]),
        (r"委托下单", ["下单", "挂单"]),
        (r"撤单", ["撤销委托", "撤回订单"]),
        (r"市价委托", ["市价单"]),
        (r"限价委托", ["限价单"]),
        (r"融券卖出", ["融券做空", "卖空"]),
        (r"上市首日", ["上市第一天", "刚上市那天"]),
        (r"网络投票", ["网上投票", "线上投票"]),
        (r"工作时间", ["上班时间", "服务时间"]),
        (r"总资产", ["资产", "账户总资产"]),
        (r"变少了", ["少了", "减少了"]),
        (r"材料", ["资料", "证件"]),
        (r"有什么条件", ["有啥要求", "有什么门槛", "要满足什么条件"]),
        (r"需要什么条件", ["要满足什么条件", "有什么要求", "门槛是什么"]),
        (r"多大年龄", ["几岁", "多大岁数"]),
        (r"把账户转到其他证券公司", ["转户到别的券商", "把账户转去别的券商"]),
        (r"从别家转过来", ["从别的券商转进来", "转入"]),
        (r"被冻结", ["冻结了", "被冻住了"]),
        (r"休眠账户", ["睡眠户", "不动户"]),
        (r"个人信息", ["个人资料", "预留信息"]),
        (r"投资者适当性", ["适当性管理", "投资者适当性管理"]),
        (r"怎么分类的", ["分几类", "分哪几类"]),
        (r"港股通", ["港股通业务", "沪深港通"]),
        (r"交易规则", ["交易制度", "买卖规则"]),
        (r"汇率", ["换汇汇率", "参考汇率"]),
        (r"收益", ["利息", "收益率"]),
        (r"可用", ["能用"]),
        (r"可取", ["能取", "能转出"]),
        (r"送转股", ["送股和转增", "送转"]),
        (r"除权除息", ["除权", "除息"]),
        (r"ST和\*ST股票", ["ST股和*ST股", "带ST的股票"]),
        (r"有什么区别", ["有啥区别", "有什么不同", "区别在哪"]),
        (r"场内和场外", ["场内场外"]),
        (r"条件单", ["条件委托", "智能条件单"]),
        (r"怎么使用", ["怎么设置", "怎么用"]),
        (r"交易时间", ["交易时段", "开市时间"]),
    ],
}

# How a caller frames a question around its content: a polite opening, a final particle, and for a
# how-to question a first-person goal then the question (我想开立证券账户，怎么弄？).
PREFIXES = ["请问", "我想问下，", "麻烦问一下，", "你好，请问"]
TAILS = ["啊", "呀", "呢"]
FIRST_PERSON = [(r"^怎么(.+?)" + _END, [r"我想\1，怎么弄？", r"我要\1，该怎么操作？"])]
_NO_TAIL = re.compile(r"[吗么不呢啊呀吧嘛][?？]?$")  # already ends in a particle: a second one is wrong

_FULL_WIDTH = str.maketrans({"?": "？", "!": "！", ",": "，", ";": "；", ":": "："})


def _tidy(text: str) -> str:
    """Normalised input carries ASCII punctuation (NFKC); a Chinese question is written full-width."""
    text = re.sub(r"\s+", "", text) if _CJK.search(text) else text.strip()
    return text.translate(_FULL_WIDTH)


def _rules() -> list[tuple[re.Pattern[str], list[str]]]:
    return [(re.compile(p), repl) for group in SPOKEN_RULES.values() for p, repl in group]


def _apply(rule: tuple[re.Pattern[str], list[str]], text: str) -> list[str]:
    pattern, replacements = rule
    if not pattern.search(text):
        return []
    return [pattern.sub(r, text) for r in replacements]


_QUESTION = re.compile(r"[?？吗么呢]$|[?？]|什么|怎|哪|多少|多久|几|谁|啥|能不能|可不可以|是不是|有没有")


def _frames(text: str) -> list[str]:
    """Framings of a question; none for a request or a greeting (请问再见 is not Chinese)."""
    if not _QUESTION.search(text):
        return []
    core = re.sub(r"^(请问|麻烦问一下|我想问下)[，,]?", "", text)
    out = [p + core for p in PREFIXES]
    if not _NO_TAIL.search(text):
        body, mark = (text[:-1], text[-1]) if text[-1] in "?？" else (text, "？")
        out += [body + t + mark for t in TAILS]
    for pattern, replacements in FIRST_PERSON:
        if re.search(pattern, core):
            out += [re.sub(pattern, r, core) for r in replacements]
    return out


def _round_robin(*lists: list[str]) -> list[str]:
    """One from each list in turn: a capped list then covers every rule instead of the first few."""
    return [x for x in chain.from_iterable(zip_longest(*lists)) if x is not None]


def spoken_rewrites(text: str, limit: int = 120) -> list[Proposal]:
    """Rewrites of ``text`` with one or two spoken-style substitutions, or a customer framing (alone or
    over one substitution). Empty for a text without Chinese: the table only knows Chinese wordings.

    Order, up to ``limit``: single substitutions, framings of the source, pairs, framings of single
    substitutions. A framing or a particle alone rarely gets past the near-duplicate filter (the
    matching encoder scores 请问X or X呢 ≥ 0.98 to X), so most of the budget goes to content changes."""
    if not _CJK.search(text):
        return []
    source = _tidy(text)
    rules = _rules()
    singles: list[list[str]] = []  # per rule, so that the cap below takes from every rule
    for rule in rules:
        singles.append([v for v in _apply(rule, source) if v != source])
    # A second rule only where it matches the source itself, else it fires on words the first one wrote
    # (遇到 + 账户 → "到账" → 遇打到账上户), and never a whole-question pattern (it would wrap the first
    # rule's words: …该怎么办 → 遇到…该的情况怎么办).
    second = [j for j, (pattern, _) in enumerate(rules) if pattern.search(source) and not pattern.pattern.startswith("^")]
    doubles: list[list[str]] = []
    for i, variants in enumerate(singles):
        for v in variants:
            doubles.append([w for j in second if j > i for w in _apply(rules[j], v) if w != v])
    framed_singles = [_frames(v) for variants in singles for v in variants]
    ordered = _round_robin(*singles) + _frames(source) + _round_robin(*doubles) + _round_robin(*framed_singles)
    out = [t for t in dict.fromkeys(_tidy(v) for v in ordered) if t and t != source]
    return [Proposal(t, "rewrite") for t in out[:limit]]


# Words the thesaurus swaps badly: its groups put question and function words beside unrelated
# particles (什么 → 啊 / 吗, 怎么 → 岂), and the spoken table above covers them properly.
STOP_WORDS = frozenset(
    ["怎么", "什么", "怎样", "如何", "哪些", "哪个", "多少", "多久", "时候", "可以", "能够", "不能", "能不能", "需要", "是否", "还有", "或者", "以及", "之后", "以后", "如果", "为什么", "怎么办", "我们", "你们", "他们", "这个", "那个", "一下", "没有", "有没有", "是不是", "已经", "现在", "其他", "别家", "除了"]
)
THESAURUS_PACKAGE = "cnsyn"
THESAURUS_FILE = "chinese_dictionary/sim_words.txt"


def thesaurus_path() -> Path:
    """cnsyn's synonym file, found without importing cnsyn (its __init__ fails on Linux)."""
    spec = importlib.util.find_spec(THESAURUS_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / THESAURUS_FILE
        if path.is_file():
            return path
    try:  # an install whose package directory is not importable still lists its files
        for f in importlib.metadata.files(THESAURUS_PACKAGE) or []:
            if str(f).endswith(THESAURUS_FILE):
                return Path(str(f.locate()))
    except importlib.metadata.PackageNotFoundError:
        pass
    return Path(THESAURUS_PACKAGE) / THESAURUS_FILE  # load_thesaurus reports it missing, with the fix


@lru_cache(maxsize=2)
def load_thesaurus(path: Path | None = None) -> dict[str, tuple[str, ...]]:
    """Word → its synonyms (the union of every group it is in), from a file of one group per line."""
    path = path or thesaurus_path()
    if not path.is_file():
        raise CallbotError(
            f"The thesaurus file {path} is missing; install it with `.venv/bin/pip install cnsyn==1.2.0` "
            "(pinned in requirements/app.lock; `make install` does it)."
        )
    groups: dict[str, set[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        words = line.split()
        for w in words:
            groups.setdefault(w, set()).update(x for x in words if x != w)
    return {w: tuple(sorted(s)) for w, s in groups.items()}


@lru_cache(maxsize=1)
def _jieba():  # type: ignore[no-untyped-def]
    import jieba

    jieba.setLogLevel(logging.WARNING)  # its "Building prefix dict …" lines are noise in every command
    jieba.initialize()
    return jieba


def _swappable(word: str) -> bool:
    """Two or more Chinese characters, no digit, not a stop word: shorter words are too ambiguous to swap."""
    return len(word) >= 2 and all(_CJK.match(ch) for ch in word) and word not in STOP_WORDS


@lru_cache(maxsize=2)
def vocabulary(texts: tuple[str, ...]) -> frozenset[str]:
    """The words (jieba) of ``texts``: what this firm's staff and callers are known to say."""
    jieba = _jieba()
    return frozenset(w for t in texts for w in jieba.lcut(t) if _swappable(w))


def thesaurus_swaps(text: str, limit: int = 40, per_word: int = 4, path: Path | None = None,
                    attested: frozenset[str] | None = None) -> list[Proposal]:
    """``text`` with one word swapped for a thesaurus synonym: segmented by jieba, words of two or more
    characters only, the ``per_word`` synonyms jieba's dictionary finds most frequent first (a rare
    synonym is usually a wrong sense of the word). With ``attested`` (see vocabulary), only synonyms in
    it: the thesaurus groups words by every sense they have (交易 → 贸易 / 生意, 密码 → 电码), and a
    sense the knowledge base never uses is nearly always the wrong one here."""
    if not _CJK.search(text):
        return []
    thesaurus = load_thesaurus(path)
    jieba = _jieba()
    source = _tidy(text)
    words = jieba.lcut(source)
    per_position: list[list[str]] = []
    for i, w in enumerate(words):
        if not _swappable(w) or w not in thesaurus:
            continue
        options = [s for s in thesaurus[w] if _swappable(s) and (jieba.get_FREQ(s) or 0) > 0
                   and (attested is None or s in attested)]
        options.sort(key=lambda s: (-(jieba.get_FREQ(s) or 0), s))
        per_position.append(["".join([*words[:i], s, *words[i + 1:]]) for s in options[:per_word]])
    out = [t for t in dict.fromkeys(_round_robin(*per_position)) if t != source]
    return [Proposal(t, "thesaurus") for t in out[:limit]]
