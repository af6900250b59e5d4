"""Card factory: issues any number of distinct, plausible virtual social security cards.

Deterministic for a given seed. Every card has a distinct 8-byte chip serial (so a distinct card
identification code, §1.3) and a distinct card number; the holder is synthetic but well-formed:

* the social security number is an 18-character citizen ID number (GB 11643-1999): 6-digit
  area code ‖ birth date YYYYMMDD ‖ 3-digit sequence (odd for men, even for women) ‖ the
  ISO 7064 MOD 11-2 check character (``id_check_digit``);
* EF06 birth date and gender agree with the ID number; the birthplace is its area code;
* names are GBK-encodable Chinese names; some (transliterated Uyghur names joined with ``·``)
  are longer than 15 characters, so they overflow tag 09 into the tag 4E name extension;
* the card number is 9 characters: a letter, 7 digits and a check digit (synthetic rule,
  ``card_number_check``; real numbers are assigned by the card management system).

When ``agent.sim.pboc`` is present (imported lazily) a card also hosts the PBOC/UnionPay debit
application and the PSE, with a 19-digit UnionPay PAN that passes the Luhn check.
"""

from __future__ import annotations

import datetime as dt
import importlib
import random
from typing import Any

from agent.errors import ConfigError
from agent.profile import CardProfile
from agent.psam.crypto import Algorithm
from agent.sim.base import SimApplet
from agent.sim.card import Holder, Issuance, Lifecycle, VirtualSscCard

#: Issuing areas of the seed regulations (area code → city).
AREAS: dict[str, str] = {
    "440300": "深圳市",
    "110000": "北京市",
    "442000": "中山市",
    "440200": "韶关市",
}
#: County-level codes used as birthplaces / ID-number areas.
BIRTHPLACES: tuple[str, ...] = (
    "440303", "440304", "440305", "440306", "110101", "110105", "110108", "442000",
    "440203", "440204", "440106", "440104", "430102", "510104", "420102", "350102",
    "450102", "650102", "130102", "370102",
)  # fmt: skip
SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程"
    "苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛段雷侯龙史陶黎贺顾毛郝"
)
COMPOUND_SURNAMES = ("欧阳", "司马", "诸葛", "上官", "司徒", "东方")
GIVEN = (
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红建文辉力斌宇浩凯健俊帆帅旭宁"
    "思雨欣怡梓涵子轩诗琪嘉豪佳琪晨曦志远振国海燕德明淑珍"
)
#: Parts of transliterated Uyghur names (nation code 05), joined with "·" (GBK A1A4).
LONG_NAME_PARTS = (
    "阿卜杜热合曼", "买买提", "艾力", "吐尔逊", "依明", "库尔班", "阿依古丽", "热依拉", "努尔",
    "帕提古丽", "托合提", "玉素甫", "艾则孜", "阿不都", "克里木", "麦麦提敏", "热合木图拉",
)  # fmt: skip
UYGHUR_NATION = 5
MINORITY_NATIONS = (2, 3, 6, 8, 11)
UNIONPAY_DEBIT_AID = bytes.fromhex("A000000333010101")
PAN_PREFIX = "621483"
_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
#: 30 bytes in tag 09 + 20 bytes in tag 4E, 2 GBK bytes per character.
MAX_NAME_CHARS = 25
#: TEST issuer master keys of the simulated bank application (AC key, script MAC key); the
#: simulated bank host (``agent.sim.bank.BankHostSim``) must be built with the same two keys.
TEST_ISSUER_MASTER_KEY = bytes.fromhex("1032547698BADCFE0123456789ABCDEF")
TEST_ISSUER_MAC_KEY = bytes.fromhex("89ABCDEF0123456776543210FEDCBA98")


def id_check_digit(first17: str) -> str:
    """GB 11643 check character: ISO 7064 MOD 11-2 over the first 17 digits."""
    if len(first17) != 17 or not first17.isdigit():
        raise ConfigError("an ID number has 17 digits before its check character")
    return _ID_CHECK[sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS, strict=True)) % 11]


def id_number_valid(number: str) -> bool:
    """18 characters, a real birth date, and a correct MOD 11-2 check character."""
    if len(number) != 18 or not number[:17].isdigit():
        return False
    try:
        dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    return id_check_digit(number[:17]) == number[17]


def luhn_check_digit(partial: str) -> str:
    """Luhn (ISO/IEC 7812) check digit for a PAN without it."""
    if not partial.isdigit():
        raise ConfigError("a PAN is digits")
    total = 0
    for i, c in enumerate(reversed(partial)):
        d = int(c)
        if i % 2 == 0:  # doubled: the rightmost digit of the partial PAN, then every other
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str(-total % 10)


def luhn_valid(pan: str) -> bool:
    return len(pan) >= 2 and pan.isdigit() and luhn_check_digit(pan[:-1]) == pan[-1]


def card_number_check(body: str) -> str:
    """Synthetic check digit of a card number ``L ddddddd``: weighted sum mod 10."""
    if len(body) != 8 or body[0] not in _LETTERS or not body[1:].isdigit():
        raise ConfigError("card number body is a letter and 7 digits")
    values = [_LETTERS.index(body[0]) + 10] + [int(c) for c in body[1:]]
    return str(sum(v * (i + 2) for i, v in enumerate(values)) % 10)


def _add_years(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


class CardFactory:
    """Issues distinct virtual cards for one profile; deterministic for a given ``seed``."""

    def __init__(self, profile: CardProfile, seed: int = 0, *, with_bank: bool = True) -> None:
        self.profile = profile
        self.seed = seed
        self.with_bank = with_bank
        # Not a secret: a seeded generator makes the same cards on every run (tests, demo).
        self._rng = random.Random(seed)  # noqa: S311
        self._serials: set[bytes] = set()
        self._card_numbers: set[str] = set()
        self.issued = 0

    # ----------------------------------------------------------------------------- data
    def _date(self, start: dt.date, end: dt.date) -> dt.date:
        return dt.date.fromordinal(self._rng.randint(start.toordinal(), end.toordinal()))

    def make_name(self, *, long: bool = False) -> tuple[str, int]:
        """A GBK-encodable name and its nation code; ``long`` → more than 15 characters."""
        rng = self._rng
        if long:
            parts: list[str] = []
            name = ""
            while len(name) <= 15:
                candidate = "·".join([*parts, rng.choice(LONG_NAME_PARTS)])
                if len(candidate) > MAX_NAME_CHARS:
                    break
                parts.append(candidate.rsplit("·", 1)[-1])
                name = candidate
            if len(name) <= 15:  # the last part overflowed: pad with a short one
                name = name + "·" + "努尔"
            return name, UYGHUR_NATION
        surname = rng.choice(COMPOUND_SURNAMES) if rng.random() < 0.03 else rng.choice(SURNAMES)
        given = "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2, 2, 2))))
        nation = 1 if rng.random() < 0.9 else rng.choice(MINORITY_NATIONS)
        return surname + given, nation

    def make_holder(self, *, long_name: bool = False, gender: str | None = None) -> Holder:
        """A synthetic holder whose ID number, birth date and gender agree (GB 11643)."""
        rng = self._rng
        area = rng.choice(BIRTHPLACES)
        birth = self._date(dt.date(1945, 1, 1), dt.date(2008, 12, 31))
        sex = gender if gender is not None else rng.choice(("1", "2"))
        if sex not in ("1", "2"):
            raise ConfigError("gender must be '1' (male) or '2' (female)")
        seq = rng.randrange(0, 1000, 1)
        if (seq % 2 == 1) != (sex == "1"):  # the 17th digit is odd for men, even for women
            seq = seq + 1 if seq < 999 else seq - 1
        first17 = f"{area}{birth:%Y%m%d}{seq:03d}"
        name, nation = self.make_name(long=long_name)
        return Holder(
            ssn=first17 + id_check_digit(first17),
            name=name,
            gender=sex,
            nation=nation,
            birthplace=area,
            birth_date=f"{birth:%Y%m%d}",
        )

    def make_issuance(
        self, *, area_code: str | None = None, spec_version: str = "3.00"
    ) -> Issuance:
        """Issuer data with a chip serial and card number never issued by this factory before."""
        rng = self._rng
        area = area_code if area_code is not None else rng.choice(tuple(AREAS))
        serial = rng.getrandbits(64).to_bytes(8, "big")
        while serial in self._serials:
            serial = rng.getrandbits(64).to_bytes(8, "big")
        self._serials.add(serial)
        number = ""
        while not number or number in self._card_numbers:
            body = rng.choice(_LETTERS) + f"{rng.randrange(10**7):07d}"
            number = body + card_number_check(body)
        self._card_numbers.add(number)
        issued = self._date(dt.date(2016, 1, 1), dt.date(2024, 12, 31))
        return Issuance(
            area_code=area,
            chip_serial=serial,
            card_number=number,
            issue_date=f"{issued:%Y%m%d}",
            expiry_date=f"{_add_years(issued, 10):%Y%m%d}",
            spec_version=spec_version,
        )

    def make_pan(self) -> str:
        """A 19-digit UnionPay debit PAN that passes the Luhn check."""
        partial = PAN_PREFIX + f"{self._rng.randrange(10**12):012d}"
        return partial + luhn_check_digit(partial)

    # ----------------------------------------------------------------------------- cards
    def issue(
        self,
        *,
        algorithm: Algorithm | str | None = None,
        spec_version: str = "3.00",
        state: str = Lifecycle.ACTIVE,
        area_code: str | None = None,
        long_name: bool | None = None,
        gender: str | None = None,
        with_bank: bool | None = None,
        pin: str | None = None,
        t0: bool = True,
    ) -> VirtualSscCard:
        """Issue one card. ``algorithm`` des/sm4 (None: alternate by a seeded draw)."""
        rng = self._rng
        if algorithm is None:
            alg = rng.choice((Algorithm.DES, Algorithm.SM4))
        else:
            try:
                alg = Algorithm(algorithm)
            except ValueError:
                raise ConfigError(f"unknown card algorithm {algorithm!r}") from None
        if long_name is None:
            long_name = rng.random() < 0.1
        issuance = self.make_issuance(area_code=area_code, spec_version=spec_version)
        holder = self.make_holder(long_name=long_name, gender=gender)
        bank = self.with_bank if with_bank is None else with_bank
        applets = self._bank_applets(issuance, holder) if bank else []
        self.issued += 1
        return VirtualSscCard.issue(
            self.profile,
            issuance,
            holder,
            algorithm=alg,
            state=state,
            pin=pin,
            applets=applets,
            t0=t0,
        )

    def issue_many(self, n: int, **kwargs: Any) -> list[VirtualSscCard]:
        return [self.issue(**kwargs) for _ in range(n)]

    def _bank_applets(self, issuance: Issuance, holder: Holder) -> list[SimApplet]:
        """PBOC debit app + PSE/PPSE when ``agent.sim.pboc`` exists; none otherwise."""
        try:
            pboc = importlib.import_module("agent.sim.pboc")
        except ImportError:
            return []
        pan = self.make_pan()
        app = pboc.PbocApplet(
            pan,
            1,
            _parse_date(issuance.expiry_date),
            holder.name,
            holder.ssn,
            issuer_master_key=TEST_ISSUER_MASTER_KEY,
            mac_master_key=TEST_ISSUER_MAC_KEY,
            effective=_parse_date(issuance.issue_date),
        )
        return [app, pboc.PseApplet.for_applets([app])]


def _parse_date(yyyymmdd: str) -> dt.date:
    return dt.date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8]))
