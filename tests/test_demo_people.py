"""Synthetic patients: valid, unique, deterministic, plausible."""

from __future__ import annotations

import random
import re
from collections import Counter
from datetime import date

import pytest

from domain.identity import check_char, parse_national_id
from workstation.demo import people
from workstation.demo.people import Person, generate_people

TODAY = date(2026, 1, 1)
COUNT = 20_000

# Province-level codes and names, written out here independently of people.py.
PROVINCES = {
    "11": "北京市", "12": "天津市", "13": "河北省", "14": "山西省", "15": "内蒙古自治区",
    "21": "辽宁省", "22": "吉林省", "23": "黑龙江省",
    "31": "上海市", "32": "江苏省", "33": "浙江省", "34": "安徽省", "35": "福建省",
    "36": "江西省", "37": "山东省",
    "41": "河南省", "42": "湖北省", "43": "湖南省", "44": "广东省", "45": "广西壮族自治区",
    "46": "海南省",
    "50": "重庆市", "51": "四川省", "52": "贵州省", "53": "云南省", "54": "西藏自治区",
    "61": "陕西省", "62": "甘肃省", "63": "青海省", "64": "宁夏回族自治区",
    "65": "新疆维吾尔自治区",
}  # fmt: skip

MOBILE = re.compile(r"1(?:3\d|5[0-35-9]|66|7[0135-8]|8\d|9[189])\d{8}")
CJK_NAME = re.compile(r"[\u4e00-\u9fff]{2,6}")
DOT_NAME = re.compile(r"[\u4e00-\u9fff]{2,6}·[\u4e00-\u9fff]{2,6}")
COMPOUND = ("欧阳", "司马", "诸葛", "上官")
POLYPHONIC = set("单曾解仇区查乐朴缪覃")


@pytest.fixture(scope="module")
def crowd() -> list[Person]:
    return list(generate_people(COUNT))


def test_every_national_id_is_valid_and_matches_the_person(crowd: list[Person]) -> None:
    for person in crowd:
        parsed = parse_national_id(person.national_id, today=TODAY)
        assert parsed.number == person.national_id
        assert parsed.birth_date.isoformat() == person.birth_date
        assert parsed.sex == person.sex
        # the fast, table-driven check character equals the reference one
        assert person.national_id[17] == check_char(person.national_id[:17])


def test_national_ids_are_unique(crowd: list[Person]) -> None:
    assert len({p.national_id for p in crowd}) == COUNT


def test_people_are_persons_with_the_six_fields(crowd: list[Person]) -> None:
    first = crowd[0]
    assert type(first) is Person
    assert first._fields == ("name", "sex", "birth_date", "national_id", "phone", "address")
    assert all(isinstance(value, str) for value in first)


def test_same_seed_same_people_other_seed_other_people(crowd: list[Person]) -> None:
    assert list(generate_people(300, seed=7)) == list(generate_people(300, seed=7))
    assert list(generate_people(300, seed=7)) != list(generate_people(300, seed=8))
    # the default seed, and a shorter call is a prefix of a longer one
    assert list(generate_people(10)) == crowd[:10]
    assert list(generate_people(people.BATCH + 5)) == crowd[: people.BATCH + 5]


def test_counts() -> None:
    assert list(generate_people(0)) == []
    assert len(list(generate_people(1))) == 1
    with pytest.raises(ValueError):
        list(generate_people(-1))


def test_phones_are_mainland_mobiles(crowd: list[Person]) -> None:
    assert all(MOBILE.fullmatch(p.phone) for p in crowd)
    assert len({p.phone for p in crowd}) > COUNT * 0.99
    assert len({p.phone[:3] for p in crowd}) > 30


def test_names_are_chinese(crowd: list[Person]) -> None:
    for person in crowd:
        assert CJK_NAME.fullmatch(person.name) or DOT_NAME.fullmatch(person.name), person.name


def test_name_mix(crowd: list[Person]) -> None:
    names = [p.name for p in crowd]
    dotted = [n for n in names if "·" in n]
    compound = [n for n in names if n.startswith(COMPOUND)]
    plain = [n for n in names if "·" not in n and not n.startswith(COMPOUND)]
    assert 0 < len(dotted) < COUNT * 0.003  # about 0.1 %
    assert 0 < len(compound) < COUNT * 0.005
    surnames = Counter(n[0] for n in plain)
    assert {s for s, _ in surnames.most_common(3)} == {"王", "李", "张"}
    assert len(POLYPHONIC & set(surnames)) >= 8
    assert surnames["曾"] > surnames["覃"] > 0
    single = sum(len(n) == 2 for n in plain) / len(plain)
    assert 0.17 < single < 0.23  # given names: about 20 % one character
    # given names follow the sex
    women = Counter(ch for p in crowd if p.sex == "F" and "·" not in p.name for ch in p.name[1:])
    men = Counter(ch for p in crowd if p.sex == "M" and "·" not in p.name for ch in p.name[1:])
    assert women["芳"] > 20 and men["芳"] == 0
    assert men["伟"] > 20 and women["伟"] == 0
    assert len(men) > 100 and len(women) > 100


def test_sexes_about_half_and_half(crowd: list[Person]) -> None:
    men = sum(p.sex == "M" for p in crowd)
    assert 0.47 < men / COUNT < 0.53
    assert {p.sex for p in crowd} == {"M", "F"}


def test_ages(crowd: list[Person]) -> None:
    born = [date.fromisoformat(p.birth_date) for p in crowd]
    ages = [TODAY.year - b.year - ((TODAY.month, TODAY.day) < (b.month, b.day)) for b in born]
    assert min(ages) >= 0 and max(ages) <= 95
    assert max(born) < TODAY
    adults = sum(20 <= a <= 70 for a in ages) / COUNT
    assert adults > 0.6
    assert sum(a < 5 for a in ages) > 0 and sum(a >= 90 for a in ages) > 0


def test_addresses_match_the_region_code(crowd: list[Person]) -> None:
    for person in crowd:
        code = person.national_id[:6]
        assert person.address.startswith(PROVINCES[code[:2]]), person
        province, city, district, _ = people.REGIONS[code]
        assert person.address.startswith(province + city + district), person
        assert "号" in person.address
    provinces = {p.national_id[:2] for p in crowd}
    assert len(provinces) == 31


def test_region_table_is_real_looking() -> None:
    assert len(people.REGIONS) >= 60
    for code, (province, _city, district, weight) in people.REGIONS.items():
        assert re.fullmatch(r"[1-6]\d{5}", code) and code[2:] != "0000"
        assert PROVINCES[code[:2]] == province
        assert district and weight > 0


def test_collisions_get_other_sequences() -> None:
    """Two batches from the same random state collide on every ID."""
    tables = people._tables()
    used: dict[int, None] = {}
    first = people._batch(tables, random.Random(5), used)
    second = people._batch(tables, random.Random(5), used)
    _check_unique_and_valid(first + second)
    assert [p.name for p in first] == [p.name for p in second]


def test_full_region_day_moves_to_the_next_day(monkeypatch: pytest.MonkeyPatch) -> None:
    """Everybody in one region on one day: 2 x 500 sequences, then the next day."""
    monkeypatch.setattr(people, "BATCH", 1500)
    tables = people._tables()
    tables = tables._replace(
        regions=tables.regions[:1] * len(tables.regions),
        days=(min(tables.day_iso),) * len(tables.days),
    )
    batch = people._batch(tables, random.Random(1), {})
    assert len(batch) == 1500
    _check_unique_and_valid(batch)
    per_day = Counter((p.national_id[:6], p.birth_date, p.sex) for p in batch)
    assert max(per_day.values()) == 500  # every sequence of one parity
    assert {p.birth_date for p in batch} == {"1930-01-02", "1930-01-03"}


def _check_unique_and_valid(crowd: list[Person]) -> None:
    assert len({p.national_id for p in crowd}) == len(crowd)
    for person in crowd:
        parsed = parse_national_id(person.national_id, today=TODAY)
        assert parsed.birth_date.isoformat() == person.birth_date
        assert parsed.sex == person.sex
