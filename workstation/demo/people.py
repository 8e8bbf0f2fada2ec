"""Synthetic Chinese patients for the demo (10,000) and the benchmark (1,000,000).

Everything a window clerk would type is realistic: surnames drawn with their real
frequencies (compound and polyphonic ones included), gender-appropriate given
names, valid resident ID numbers (real county-level region codes, birth date,
sequence parity for sex, ISO 7064 MOD 11-2 check character), mainland mobile
numbers and postal addresses consistent with the ID's region.

The output depends only on ``count`` and ``seed`` (ages are counted from the
fixed reference date 2026-01-01, not today), and is prefix-stable: the first
``n`` people of a larger call equal ``generate_people(n, seed)``.

Speed: people are made column by column in batches of ``BATCH`` with no
Python-level code per person.  Three ``randbytes`` calls per batch give each
person three 32-bit, four 16-bit and one 8-bit random words; every choice is
a lookup of (part of) a word in a precomputed table of 2**8 to 2**20 entries
in which each item takes a share of the slots proportional to its weight,
driven by ``map`` over builtins (``operator``, ``tuple.__getitem__``,
``str.join``).  The first 17 characters of an ID are handled as one number
that also carries, in its low bits, the weighted digit sum giving the check
character (verified against ``identity.check_char`` when the tables are
built), so region + birth date + sequence is two integer additions.  Only the
rare minority names and ID collisions are handled one by one.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, timedelta
from functools import cache
from itertools import compress, repeat
from operator import add, and_, gt, mod, mul, rshift
from typing import Any, NamedTuple

from domain.identity import check_char

__all__ = ["REFERENCE_DATE", "Person", "generate_people"]

REFERENCE_DATE = date(2026, 1, 1)
OLDEST_AGE = 95
MINORITY_NAME_RATE = 0.001
SINGLE_CHAR_GIVEN_RATE = 0.2
BATCH = 4096  # people made at once; output does not depend on where a call stops


class Person(NamedTuple):
    name: str
    sex: str  # "M" or "F"
    birth_date: str  # ISO YYYY-MM-DD
    national_id: str  # 18 characters
    phone: str  # 11-digit mainland mobile
    address: str


# Surname -> frequency in units of 0.01 % of the population (approximate,
# after the 2020 census ranking).  Compound and polyphonic surnames are kept
# at their (low) real weights.
SURNAME_WEIGHTS: dict[str, int] = {
    "王": 712, "李": 700, "张": 674, "刘": 510, "陈": 461, "杨": 322, "黄": 245,
    "赵": 219, "吴": 200, "周": 195, "徐": 145, "孙": 138, "马": 129, "朱": 128,
    "胡": 116, "郭": 113, "何": 106, "林": 102, "高": 100, "罗": 95, "郑": 87,
    "梁": 85, "谢": 76, "宋": 70, "唐": 69, "许": 66, "韩": 65, "冯": 64,
    "邓": 63, "曹": 62, "彭": 58, "曾": 56, "肖": 55, "田": 53, "董": 52,
    "袁": 50, "潘": 49, "于": 48, "蒋": 47, "蔡": 46, "余": 45, "杜": 44,
    "叶": 43, "程": 42, "苏": 41, "魏": 40, "吕": 39, "丁": 38, "任": 37,
    "沈": 36, "姚": 35, "卢": 34, "姜": 33, "崔": 32, "钟": 31, "谭": 30,
    "陆": 29, "汪": 28, "范": 27, "金": 27, "石": 26, "廖": 26, "贾": 25,
    "夏": 24, "韦": 24, "付": 23, "方": 23, "白": 22, "邹": 22, "孟": 21,
    "熊": 21, "秦": 20, "邱": 20, "江": 19, "尹": 19, "薛": 18, "闫": 18,
    "段": 17, "雷": 17, "侯": 16, "龙": 16, "史": 15, "陶": 15, "黎": 14,
    "贺": 14, "顾": 14, "毛": 13, "郝": 13, "龚": 13, "邵": 12, "万": 12,
    "钱": 12, "严": 11, "武": 11, "戴": 11, "莫": 10, "孔": 10, "向": 10,
    "汤": 10, "常": 9, "温": 9, "康": 9, "施": 8, "文": 8, "牛": 8, "樊": 8,
    "葛": 8, "邢": 7, "安": 7, "齐": 7, "易": 7, "乔": 7, "伍": 7, "庞": 6,
    "颜": 6, "倪": 6, "庄": 6, "聂": 6, "章": 6, "鲁": 5, "岳": 5, "翟": 5,
    "殷": 5, "詹": 5, "申": 5, "欧": 5, "耿": 5, "关": 5, "兰": 4, "焦": 4,
    "俞": 4, "左": 4, "柳": 4, "甘": 4, "祝": 4, "包": 4, "宁": 4, "尚": 4,
    "符": 4, "舒": 4, "阮": 3, "柯": 3, "纪": 3, "梅": 3, "童": 3, "凌": 3,
    "毕": 3,
    # polyphonic surnames (read differently from the common character)
    "单": 8, "解": 5, "仇": 3, "区": 1, "查": 2, "乐": 2, "朴": 3, "缪": 3,
    "覃": 9,
    # compound surnames
    "欧阳": 2, "司马": 1, "诸葛": 1, "上官": 1,
}  # fmt: skip

MALE_CHARS = (
    "伟强磊军洋勇杰涛超浩宇刚辉鹏飞鑫波斌宁峰建俊亮成龙林东海国新志永健凯帅博毅坤"
    "锋彬豪栋良威兵庆江锦德振山虎雄宏伦涵川泽铭旭晖昊翔哲瑞轩宸睿源航勋森钢贵发荣"
    "富福生祥才忠武立坚彪义兴胜光清朋琛剑诚民友盛春力全钧鸿达彦骏晟鸣帆岩松柏"
)
FEMALE_CHARS = (
    "芳娜敏静丽艳娟霞婷雪秀英慧巧美娅琳素云莲真环瑶怡倩洁梅琴蕾薇菲燕红玲萍颖露"
    "瑾妍茜秋珊莎黛青婉娴琼珍贞莉桂娣璐琦晶璇姣婵雁蓓仪荷丹蓉眉蕊菁梦岚苑婕馨韵"
    "园咏卿澜纯毓悦冰爽琬茗羽希欣滢馥筠柔竹凝芸寒伊宜舒妮曼紫蝶菡翠萱雯彤钰媛淑"
)
NEUTRAL_CHARS = "子一安晨思嘉可心乐晓小天然梓诗语若依亦辰佳文明华平阳雨"

MINORITY_MALE = (
    "买买提", "艾力", "阿不都", "吐尔逊", "艾买提", "努尔", "亚森", "艾山",
    "玉素甫", "伊力哈木", "阿迪力", "热合曼", "肉孜", "阿布拉", "卡德尔", "艾尔肯",
)  # fmt: skip
MINORITY_FEMALE = (
    "阿依古丽", "古丽娜", "热依拉", "帕提古丽", "米娜瓦尔", "阿依努尔", "古丽巴哈尔",
    "努尔古丽", "再努尔", "祖丽菲亚", "迪丽努尔", "阿米娜", "热孜万古丽", "麦合丽娅",
)  # fmt: skip

# Real county-level administrative codes (GB/T 2260): code -> (province,
# prefecture-level city or "" under a municipality, district or county-level
# unit, relative weight).  441900 东莞市 has no districts: it is the last part.
REGIONS: dict[str, tuple[str, str, str, int]] = {
    "110101": ("北京市", "", "东城区", 3),
    "110102": ("北京市", "", "西城区", 3),
    "110105": ("北京市", "", "朝阳区", 8),
    "110106": ("北京市", "", "丰台区", 5),
    "110108": ("北京市", "", "海淀区", 8),
    "110114": ("北京市", "", "昌平区", 5),
    "120101": ("天津市", "", "和平区", 2),
    "120104": ("天津市", "", "南开区", 3),
    "120116": ("天津市", "", "滨海新区", 5),
    "130102": ("河北省", "石家庄市", "长安区", 3),
    "130104": ("河北省", "石家庄市", "桥西区", 3),
    "130602": ("河北省", "保定市", "竞秀区", 3),
    "140105": ("山西省", "太原市", "小店区", 3),
    "140106": ("山西省", "太原市", "迎泽区", 2),
    "150102": ("内蒙古自治区", "呼和浩特市", "新城区", 2),
    "150105": ("内蒙古自治区", "呼和浩特市", "赛罕区", 2),
    "210102": ("辽宁省", "沈阳市", "和平区", 3),
    "210103": ("辽宁省", "沈阳市", "沈河区", 2),
    "210202": ("辽宁省", "大连市", "中山区", 2),
    "220102": ("吉林省", "长春市", "南关区", 2),
    "220104": ("吉林省", "长春市", "朝阳区", 2),
    "230102": ("黑龙江省", "哈尔滨市", "道里区", 2),
    "230103": ("黑龙江省", "哈尔滨市", "南岗区", 3),
    "310101": ("上海市", "", "黄浦区", 3),
    "310104": ("上海市", "", "徐汇区", 5),
    "310105": ("上海市", "", "长宁区", 3),
    "310106": ("上海市", "", "静安区", 4),
    "310110": ("上海市", "", "杨浦区", 4),
    "310112": ("上海市", "", "闵行区", 7),
    "310115": ("上海市", "", "浦东新区", 10),
    "320102": ("江苏省", "南京市", "玄武区", 3),
    "320106": ("江苏省", "南京市", "鼓楼区", 3),
    "320508": ("江苏省", "苏州市", "姑苏区", 3),
    "320506": ("江苏省", "苏州市", "吴中区", 4),
    "330102": ("浙江省", "杭州市", "上城区", 3),
    "330106": ("浙江省", "杭州市", "西湖区", 4),
    "330108": ("浙江省", "杭州市", "滨江区", 3),
    "330212": ("浙江省", "宁波市", "鄞州区", 4),
    "330302": ("浙江省", "温州市", "鹿城区", 3),
    "340104": ("安徽省", "合肥市", "蜀山区", 3),
    "340111": ("安徽省", "合肥市", "包河区", 3),
    "350102": ("福建省", "福州市", "鼓楼区", 2),
    "350203": ("福建省", "厦门市", "思明区", 3),
    "350206": ("福建省", "厦门市", "湖里区", 3),
    "360102": ("江西省", "南昌市", "东湖区", 2),
    "360103": ("江西省", "南昌市", "西湖区", 2),
    "370102": ("山东省", "济南市", "历下区", 3),
    "370103": ("山东省", "济南市", "市中区", 3),
    "370202": ("山东省", "青岛市", "市南区", 2),
    "370212": ("山东省", "青岛市", "崂山区", 2),
    "410102": ("河南省", "郑州市", "中原区", 3),
    "410105": ("河南省", "郑州市", "金水区", 5),
    "410305": ("河南省", "洛阳市", "涧西区", 3),
    "420102": ("湖北省", "武汉市", "江岸区", 3),
    "420106": ("湖北省", "武汉市", "武昌区", 4),
    "420111": ("湖北省", "武汉市", "洪山区", 5),
    "430102": ("湖南省", "长沙市", "芙蓉区", 2),
    "430104": ("湖南省", "长沙市", "岳麓区", 4),
    "430105": ("湖南省", "长沙市", "开福区", 2),
    "440104": ("广东省", "广州市", "越秀区", 4),
    "440105": ("广东省", "广州市", "海珠区", 4),
    "440106": ("广东省", "广州市", "天河区", 6),
    "440111": ("广东省", "广州市", "白云区", 6),
    "440304": ("广东省", "深圳市", "福田区", 5),
    "440305": ("广东省", "深圳市", "南山区", 6),
    "440306": ("广东省", "深圳市", "宝安区", 8),
    "440604": ("广东省", "佛山市", "禅城区", 3),
    "441900": ("广东省", "", "东莞市", 6),
    "450103": ("广西壮族自治区", "南宁市", "青秀区", 3),
    "450302": ("广西壮族自治区", "桂林市", "秀峰区", 1),
    "460106": ("海南省", "海口市", "龙华区", 2),
    "460108": ("海南省", "海口市", "美兰区", 2),
    "500103": ("重庆市", "", "渝中区", 3),
    "500106": ("重庆市", "", "沙坪坝区", 4),
    "500112": ("重庆市", "", "渝北区", 6),
    "510104": ("四川省", "成都市", "锦江区", 3),
    "510105": ("四川省", "成都市", "青羊区", 3),
    "510106": ("四川省", "成都市", "金牛区", 4),
    "510107": ("四川省", "成都市", "武侯区", 5),
    "510108": ("四川省", "成都市", "成华区", 3),
    "520102": ("贵州省", "贵阳市", "南明区", 2),
    "520103": ("贵州省", "贵阳市", "云岩区", 2),
    "530102": ("云南省", "昆明市", "五华区", 3),
    "530103": ("云南省", "昆明市", "盘龙区", 2),
    "540102": ("西藏自治区", "拉萨市", "城关区", 1),
    "610103": ("陕西省", "西安市", "碑林区", 2),
    "610104": ("陕西省", "西安市", "莲湖区", 3),
    "610113": ("陕西省", "西安市", "雁塔区", 5),
    "620102": ("甘肃省", "兰州市", "城关区", 2),
    "630102": ("青海省", "西宁市", "城东区", 1),
    "640104": ("宁夏回族自治区", "银川市", "兴庆区", 1),
    "650102": ("新疆维吾尔自治区", "乌鲁木齐市", "天山区", 2),
    "650103": ("新疆维吾尔自治区", "乌鲁木齐市", "沙依巴克区", 2),
    "653101": ("新疆维吾尔自治区", "喀什地区", "喀什市", 1),
}

# Regions used for the Uyghur-style names (middle-dot names).
_MINORITY_REGION_PREFIX = "65"

MOBILE_PREFIXES: dict[str, int] = {
    **{f"13{d}": 10 for d in range(10)},
    **{f"15{d}": 8 for d in (0, 1, 2, 3, 5, 6, 7, 8, 9)},
    "166": 2,
    **{f"17{d}": 2 for d in (0, 1, 3, 5)},
    **{f"17{d}": 5 for d in (6, 7, 8)},
    **{f"18{d}": 9 for d in range(10)},
    "191": 2,
    "198": 2,
    "199": 3,
}

_STREET_BASES = (
    "建国", "人民", "解放", "中山", "和平", "胜利", "新华", "长江", "黄河", "文化",
    "学府", "朝阳", "光明", "幸福", "东风", "建设", "青年", "友谊", "民主", "团结",
    "复兴", "花园", "育才", "工业", "科技", "金融", "滨江", "沿河", "湖滨", "迎宾",
    "五一", "北京", "上海", "南京", "广州", "天山", "昆仑", "泰山", "华山", "太白",
    "桂花", "梧桐", "银杏", "松柏", "紫荆", "海棠", "丁香", "玉兰", "枫林", "翠竹",
    "春晖", "东升", "兴华", "振兴", "繁荣", "康宁", "安居", "平安", "长安", "锦绣",
)  # fmt: skip
_STREET_SUFFIXES = ("路", "街", "大街", "大道", "东路", "西路", "南路", "北路", "中路", "一路", "巷")  # fmt: skip
_COMMUNITIES = (
    "阳光花园", "锦绣家园", "幸福里", "和平小区", "翠苑", "金色家园", "碧水湾",
    "丽景苑", "华府", "名都花园", "新村", "嘉园", "绿洲小区", "御景湾", "康居小区",
    "书香门第", "春天花园", "星河湾", "滨江花园", "世纪新城",
)  # fmt: skip

# Weighted digit sums for the check character (ISO 7064 MOD 11-2 weights).
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"

# Relative number of patients by age (upper bound exclusive): more adults 20-70.
_AGE_WEIGHTS = ((5, 8), (20, 6), (30, 12), (60, 15), (70, 13), (80, 9), (90, 4), (96, 1))

_SLOTS = 1 << 16  # table size for a 16-bit word
_DAY_BITS = 20  # the day word's top 20 bits pick a birth date ...
_RARE_BITS = 32 - _DAY_BITS  # ... and its low 12 bits whether the name is a minority one
_NAME_SHIFT = 15  # name word >> 15: a given name; & 0x1FFFF: a sequence; bit 16 is the sex
_LOW17 = (1 << 17) - 1
_WIDE, _NARROW, _BYTES = 3, 4, 1  # 32-, 16- and 8-bit random words per person


def _digit_sum(digits: str, start: int) -> int:
    return sum(map(mul, map(int, digits), _WEIGHTS[start : start + len(digits)]))


def _age_weight(age: int) -> int:
    return next(w for upper, w in _AGE_WEIGHTS if age < upper)


def _table(
    items: Sequence[Any], weights: Sequence[int] | None = None, size: int = _SLOTS
) -> tuple[Any, ...]:
    """``size`` slots shared among ``items`` in proportion to ``weights``.

    Every item gets at least one slot, so a random index of ``size`` picks
    each with (to within a slot) its weight's share.
    """
    weights = weights if weights is not None else [1] * len(items)
    total = sum(weights)
    table: list[Any] = []
    cumulative = 0
    for item, weight in zip(items, weights, strict=True):
        cumulative += weight
        slots = cumulative * size // total - len(table)
        if slots < 1:
            raise ValueError(f"table of {size} is too small for {item!r}")
        table += [item] * slots
    return tuple(table)


def _given_names(pool: str) -> tuple[str, ...]:
    """2**16 slots: about 20 % one-character names, 80 % two-character names."""
    singles = list(pool)
    doubles = [a + b for a in pool for b in pool]
    n_single = round(_SLOTS * SINGLE_CHAR_GIVEN_RATE)
    return _table(singles, size=n_single) + _table(doubles, size=_SLOTS - n_single)


def _by_sex(women: Sequence[Any], men: Sequence[Any]) -> tuple[Any, ...]:
    """A 2**17 table whose index bit 1 is the sex: entries 4k, 4k+1 are
    ``women[2k]``, ``women[2k+1]`` and entries 4k+2, 4k+3 ``men[2k]``, ``men[2k+1]``."""
    table: list[Any] = [None] * (len(women) + len(men))
    table[0::4], table[1::4] = women[0::2], women[1::2]
    table[2::4], table[3::4] = men[0::2], men[1::2]
    return tuple(table)


# An ID's first 17 digits as a number, shifted left by _SUM_BITS, plus the
# (unreduced) weighted digit sum of those digits: adding a region's, a day's
# and a sequence's packed values gives the packed value of the whole, which is
# the key for uniqueness, the ID text (>> _SUM_BITS) and its check character
# (& _SUM_MASK).  Partial sums are reduced mod 11 so the total stays < 2**6.
_SUM_BITS = 6
_SUM_MASK = (1 << _SUM_BITS) - 1
_MALE_PACKED = (1 << _SUM_BITS) + 2  # odd = even + 1; the last digit has weight 2


def _packed(number: int, digits: str, start: int) -> int:
    return (number << _SUM_BITS) + _digit_sum(digits, start) % 11


class _Tables(NamedTuple):
    # indexed by name word >> 15 (bit 1 of which is bit 16 of the word: the sex)
    given: tuple[str, ...]
    sexes: tuple[str, ...]  # "F" or "M"
    # indexed by name word & 0x1FFFF (bit 16: the sex): a packed sequence
    sequences: tuple[int, ...]
    even_sequences: tuple[int, ...]  # 2**16 slots of the 500 even ones, packed
    even_in_order: tuple[int, ...]  # the 500
    surnames: tuple[str, ...]
    regions: tuple[int, ...]  # packed region code * 10**11
    region_areas: dict[int, str]  # packed region -> province + city + district
    minority_regions: tuple[int, ...]  # packed
    days: tuple[int, ...]  # 2**20 weighted packed YYYYMMDD * 1000
    day_iso: dict[int, str]  # packed day -> YYYY-MM-DD
    next_day: dict[int, int]  # packed day -> packed following day (for a full day)
    check_chars: str  # indexed by the unreduced weighted sum
    phone_bases: tuple[int, ...]  # 2**8: prefix * 10**8
    street_numbers: tuple[str, ...]  # "建国路88号"
    address_tails: tuple[str, ...]  # unit 60 %, estate 30 %, none 10 %


@cache
def _tables() -> _Tables:
    codes = tuple(REGIONS)
    region_packed = [_packed(int(c) * 10**11, c, 0) for c in codes]
    first = REFERENCE_DATE.replace(year=REFERENCE_DATE.year - OLDEST_AGE - 1) + timedelta(days=1)
    days = [first + timedelta(days=i) for i in range((REFERENCE_DATE - first).days)]
    ref = (REFERENCE_DATE.month, REFERENCE_DATE.day)
    ages = [REFERENCE_DATE.year - d.year - (ref < (d.month, d.day)) for d in days]
    age_weights = [_age_weight(age) for age in range(OLDEST_AGE + 1)]
    iso = [d.isoformat() for d in days]
    year_sums = {y: _digit_sum(f"{y:04d}", 6) for y in range(first.year, REFERENCE_DATE.year)}
    leap_year = [date(2000, 1, 1) + timedelta(days=i) for i in range(366)]
    mmdd_sums = {(d.month, d.day): _digit_sum(f"{d:%m%d}", 10) for d in leap_year}
    day_packed = [
        (d.year * 10**7 + d.month * 10**5 + d.day * 1000 << _SUM_BITS)
        + (year_sums[d.year] + mmdd_sums[d.month, d.day]) % 11
        for d in days
    ]
    even = tuple(_packed(s, f"{s:03d}", 14) for s in range(0, 1000, 2))
    even_slots = _table(even)
    unit_tails = [
        f"{b}栋{u}单元{f}{r:02d}室"
        for b in range(1, 31)
        for u in range(1, 7)
        for f in range(1, 31)
        for r in range(1, 5)
    ]
    estate_tails = [
        f"{c}{b}号楼{f}{r:02d}室"
        for c in _COMMUNITIES
        for b in range(1, 13)
        for f in range(1, 19)
        for r in range(1, 5)
    ]
    n_unit, n_estate = len(unit_tails), len(estate_tails)
    tails = unit_tails + estate_tails + [""]
    tail_weights = [6 * n_estate] * n_unit + [3 * n_unit] * n_estate + [n_unit * n_estate]
    tables = _Tables(
        given=_by_sex(
            _given_names("".join(dict.fromkeys(FEMALE_CHARS + NEUTRAL_CHARS))),
            _given_names("".join(dict.fromkeys(MALE_CHARS + NEUTRAL_CHARS))),
        ),
        sexes=_by_sex(("F",) * _SLOTS, ("M",) * _SLOTS),
        sequences=even_slots + tuple(p + _MALE_PACKED for p in even_slots),
        even_sequences=even_slots,
        even_in_order=even,
        surnames=_table(tuple(SURNAME_WEIGHTS), tuple(SURNAME_WEIGHTS.values())),
        regions=_table(region_packed, [w for *_, w in REGIONS.values()]),
        region_areas={
            packed: p + c + d
            for packed, (p, c, d, _) in zip(region_packed, REGIONS.values(), strict=True)
        },
        minority_regions=tuple(
            packed
            for packed, c in zip(region_packed, codes, strict=True)
            if c.startswith(_MINORITY_REGION_PREFIX)
        ),
        days=_table(day_packed, [age_weights[a] for a in ages], 1 << _DAY_BITS),
        day_iso=dict(zip(day_packed, iso, strict=True)),
        next_day=dict(zip(day_packed, day_packed[1:] + day_packed[:1], strict=True)),
        check_chars=(_CHECK_CHARS * 6)[: 1 << _SUM_BITS],
        phone_bases=_table(
            [int(p) * 10**8 for p in MOBILE_PREFIXES], tuple(MOBILE_PREFIXES.values()), 256
        ),
        street_numbers=_table(
            [f"{b}{s}{n}号" for b in _STREET_BASES for s in _STREET_SUFFIXES for n in range(1, 100)]
        ),
        address_tails=_table(tails, tail_weights),
    )
    _self_check(tables)
    return tables


def _national_id(packed: int) -> str:
    return f"{packed >> _SUM_BITS}{_CHECK_CHARS[(packed & _SUM_MASK) % 11]}"


def _self_check(t: _Tables) -> None:
    """Packed sums give the ``identity.check_char`` check character, and a
    name word's sequence parity agrees with the sex of its given name."""
    days = sorted(t.day_iso)
    words = [0, 1 << 16, 0xFFFFFFFF, 0xFFFEFFFF, 0x12345678, 0x9ABCDEF0]
    for n, region in enumerate(t.region_areas):
        for day in (days[0], days[n * 331 % len(days)], days[-1]):
            for word in words:
                national_id = _national_id(region + day + t.sequences[word & _LOW17])
                if len(national_id) != 18 or national_id[17] != check_char(national_id[:17]):
                    raise AssertionError(f"check character table is wrong for {national_id}")
                if "FM"[int(national_id[16]) % 2] != t.sexes[word >> _NAME_SHIFT]:
                    raise AssertionError(f"sequence parity is wrong for {national_id}")


def generate_people(count: int, seed: int = 2026) -> Iterator[Person]:
    """Yield ``count`` synthetic patients, deterministic for ``seed``.

    National ID numbers are valid and unique within one call.  The first
    ``n`` people do not depend on ``count`` (batches are always made whole).
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    t = _tables()
    rng = random.Random(seed)
    # Packed IDs issued so far.  A dict of ints is not tracked by the garbage
    # collector (a set would be traversed, all million entries, by every full
    # collection).
    used: dict[int, None] = {}
    remaining = count
    while remaining > 0:
        batch = _batch(t, rng, used)
        yield from batch if remaining >= BATCH else batch[:remaining]
        remaining -= BATCH


def _batch(t: _Tables, rng: random.Random, used: dict[int, None]) -> list[Person]:
    """BATCH people, column by column."""
    wide = memoryview(rng.randbytes(4 * _WIDE * BATCH)).cast("I")
    narrow = memoryview(rng.randbytes(2 * _NARROW * BATCH)).cast("H")
    w_prefix = rng.randbytes(_BYTES * BATCH)
    w_name, w_day, w_phone = (wide[i * BATCH : (i + 1) * BATCH] for i in range(_WIDE))
    w_surname, w_region, w_street, w_tail = (
        narrow[i * BATCH : (i + 1) * BATCH] for i in range(_NARROW)
    )

    # The name word: bits 15-31 pick the given name, bits 0-16 the sequence;
    # bit 16, shared, is the sex, so the name and the ID's parity agree.
    given_index = list(map(rshift, w_name, repeat(_NAME_SHIFT)))
    names = list(
        map(add, map(t.surnames.__getitem__, w_surname), map(t.given.__getitem__, given_index))
    )
    regions = list(map(t.regions.__getitem__, w_region))
    days = list(map(t.days.__getitem__, map(rshift, w_day, repeat(_RARE_BITS))))
    sequences = map(t.sequences.__getitem__, map(and_, w_name, repeat(_LOW17)))

    threshold = round(MINORITY_NAME_RATE * (1 << _RARE_BITS))
    rare_bits = map(and_, w_day, repeat((1 << _RARE_BITS) - 1))
    for i in compress(range(BATCH), map(gt, repeat(threshold), rare_bits)):
        names[i], regions[i] = _minority_name(t, rng, given_index[i] >> 1 & 1)

    ids = list(map(add, map(add, regions, days), sequences))
    fresh = dict.fromkeys(ids)
    if len(fresh) < BATCH:  # a repeat inside the batch (rare): all in order
        _resolve_collisions(t, rng, used, ids, regions, days, range(BATCH))
    else:
        taken = used.keys() & fresh
        used.update(fresh)
        if taken:  # about one batch in two near a million people
            clashes = compress(range(BATCH), map(taken.__contains__, ids))
            _resolve_collisions(t, rng, used, ids, regions, days, clashes, renew=True)

    national_ids = list(
        map(
            add,
            map(str, map(rshift, ids, repeat(_SUM_BITS))),
            map(t.check_chars.__getitem__, map(and_, ids, repeat(_SUM_MASK))),
        )
    )
    phones = list(
        map(
            str,
            map(add, map(t.phone_bases.__getitem__, w_prefix), map(mod, w_phone, repeat(10**8))),
        )
    )
    addresses = list(
        map(
            "".join,
            zip(
                map(t.region_areas.__getitem__, regions),
                map(t.street_numbers.__getitem__, w_street),
                map(t.address_tails.__getitem__, w_tail),
                strict=True,
            ),
        )
    )
    return list(
        map(
            tuple.__new__,
            repeat(Person),
            zip(
                names,
                map(t.sexes.__getitem__, given_index),
                map(t.day_iso.__getitem__, days),
                national_ids,
                phones,
                addresses,
                strict=True,
            ),
        )
    )


def _minority_name(t: _Tables, rng: random.Random, male: int) -> tuple[str, int]:
    """A Uyghur-style name (own name · father's name) and a Xinjiang region."""
    own = rng.choice(MINORITY_MALE if male else MINORITY_FEMALE)
    return own + "·" + rng.choice(MINORITY_MALE), rng.choice(t.minority_regions)


def _resolve_collisions(
    t: _Tables,
    rng: random.Random,
    used: dict[int, None],
    ids: list[int],
    regions: list[int],
    days: list[int],
    positions: Iterable[int],
    renew: bool = False,
) -> None:
    """Give the packed IDs at ``positions`` that are taken a free one, in order.

    ``renew``: the IDs at ``positions`` are known to be taken (by an earlier
    batch) although ``used`` already holds the whole batch.  Otherwise each
    is checked, then added.  A new ID is first tried with other random
    sequences of the same parity for that region and day, then by a scan of
    all of them; if that region and day is full, the next day.
    """
    for i in positions:
        packed = ids[i]
        if renew or packed in used:
            male = packed >> _SUM_BITS & 1
            base = regions[i] + days[i] + (_MALE_PACKED if male else 0)
            for _ in range(16):
                packed = base + t.even_sequences[rng.randrange(_SLOTS)]
                if packed not in used:
                    break
            else:
                days[i], packed = _scan_free(t, used, regions[i], days[i], male)
            ids[i] = packed
        used[packed] = None


def _scan_free(
    t: _Tables, used: dict[int, None], region: int, day: int, male: int
) -> tuple[int, int]:
    while True:
        base = region + day + (_MALE_PACKED if male else 0)
        for sequence in t.even_in_order:
            if base + sequence not in used:
                return day, base + sequence
        day = t.next_day[day]
