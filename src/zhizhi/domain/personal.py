"""Citizen identity numbers (公民身份号码, GB 11643-1999): checked before anything is stored.

Why check at all: a mistyped number stored encrypted can never be found or corrected by
anyone who may not unmask it, so a wrong one is refused at intake with a message that
says what is wrong, and never repeats the number itself (error messages reach logs and
problem responses; the number is personal data).

The 18th character is a checksum: the first 17 digits weighted by 2^(17-i) mod 11, summed,
and the remainder mapped through `_CHECK`. Digits 7–14 are the date of birth.
"""

from __future__ import annotations

from datetime import date

from zhizhi.domain.errors import ValidationFailed

ID_NUMBER_LENGTH = 18
#: Weight of each of the first 17 digits: 2^(17-i) mod 11.
_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))
#: Check character for each remainder of the weighted sum mod 11.
_CHECK = "10X98765432"


def id_number_check_char(first17: str) -> str:
    """The check character GB 11643 gives to the first 17 digits."""
    return _CHECK[sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True)) % 11]


def parse_id_number(value: str, field: str = "reporter_id_number") -> str:
    """The number normalised (spaces removed, a trailing x upper-cased), or `ValidationFailed`.

    Only the 18-character form is accepted: the 15-character form was replaced in 1999–2013
    and has no checksum. The message names the field and the problem, never the value.
    """
    text = "".join(value.split()).upper()
    if len(text) != ID_NUMBER_LENGTH:
        raise ValidationFailed(f"身份证号应为 {ID_NUMBER_LENGTH} 位 / the ID number must have {ID_NUMBER_LENGTH} "
                               "characters", field=field)
    first17, check = text[:17], text[17]
    if not (first17.isascii() and first17.isdigit()) or not (check.isdigit() or check == "X"):
        raise ValidationFailed("身份证号前 17 位应为数字，末位为数字或 X / the ID number is 17 digits and a "
                               "digit or X", field=field)
    if first17[0] == "0":
        raise ValidationFailed("身份证号的地区码无效 / the ID number's region code is invalid", field=field)
    try:
        born = date(int(first17[6:10]), int(first17[10:12]), int(first17[12:14]))
    except ValueError:
        born = None
    if born is None or born.year < 1870:
        raise ValidationFailed("身份证号中的出生日期无效 / the ID number's date of birth is invalid", field=field)
    if id_number_check_char(first17) != check:
        raise ValidationFailed("身份证号校验位不符 / the ID number's check character does not match (GB 11643)",
                               field=field)
    return text
