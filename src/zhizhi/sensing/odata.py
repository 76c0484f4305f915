"""A small OData query evaluator for SensorThings: $filter, $orderby, $select, $top, $skip over entity dicts.

$filter supports comparison (eq ne gt ge lt le), logical (and or not), parentheses, arithmetic (add sub mul
div mod), string functions (substringof, contains, startswith, endswith, tolower, toupper, length, concat,
trim), literals (numbers, 'strings', true, false, null, ISO 8601 datetimes) and property paths with `/`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from zhizhi.domain.errors import ValidationFailed

_TOKEN = re.compile(r"\s*(?:(?P<dt>\d{4}-\d\d-\d\dT[\d:.]+(?:Z|[+-]\d\d:\d\d)?)"
                    r"|(?P<num>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)"
                    r"|(?P<str>'(?:[^']|'')*')|(?P<op>[(),])|(?P<name>[A-Za-z_@][\w@./]*))")
_CMP = {"eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "gt": lambda a, b: _ok(a, b) and a > b,
        "ge": lambda a, b: _ok(a, b) and a >= b, "lt": lambda a, b: _ok(a, b) and a < b,
        "le": lambda a, b: _ok(a, b) and a <= b}
_ARITH = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
          "div": lambda a, b: a / b, "mod": lambda a, b: a % b}
_FUNCS: dict[str, Callable[..., Any]] = {
    "substringof": lambda a, b: str(a) in str(b), "contains": lambda a, b: str(b) in str(a),
    "startswith": lambda a, b: str(a).startswith(str(b)), "endswith": lambda a, b: str(a).endswith(str(b)),
    "tolower": lambda a: str(a).lower(), "toupper": lambda a: str(a).upper(), "length": lambda a: len(str(a)),
    "concat": lambda a, b: f"{a}{b}", "trim": lambda a: str(a).strip(),
    "round": lambda a: round(a), "floor": lambda a: int(a // 1), "ceiling": lambda a: -int(-a // 1),
}

Expr = Callable[[dict[str, Any]], Any]


def _ok(a: Any, b: Any) -> bool:
    return a is not None and b is not None


def get_path(entity: dict[str, Any], path: str) -> Any:
    cur: Any = entity
    for part in path.split("/"):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValidationFailed(f"$filter 无法解析 / cannot parse $filter near {text[pos:pos + 20]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise ValidationFailed("$filter 不完整 / $filter ends too early")
        self.i += 1
        return tok

    def parse(self) -> Expr:
        e = self.or_()
        if self.peek() is not None:
            raise ValidationFailed(f"$filter 多余内容 / unexpected {self.peek()[1]!r} in $filter")  # type: ignore[index]
        return e

    def or_(self) -> Expr:
        left = self.and_()
        while self.peek() == ("name", "or"):
            self.take()
            right = self.and_()
            left = (lambda a, b: lambda x: bool(a(x)) or bool(b(x)))(left, right)
        return left

    def and_(self) -> Expr:
        left = self.not_()
        while self.peek() == ("name", "and"):
            self.take()
            right = self.not_()
            left = (lambda a, b: lambda x: bool(a(x)) and bool(b(x)))(left, right)
        return left

    def not_(self) -> Expr:
        if self.peek() == ("name", "not"):
            self.take()
            inner = self.not_()
            return lambda x: not inner(x)
        return self.cmp()

    def cmp(self) -> Expr:
        left = self.add()
        tok = self.peek()
        if tok and tok[0] == "name" and tok[1] in _CMP:
            self.take()
            right = self.add()
            fn = _CMP[tok[1]]
            return lambda x: fn(*_coerce(left(x), right(x)))
        return left

    def add(self) -> Expr:
        left = self.mul()
        while self.peek() in (("name", "add"), ("name", "sub")):
            fn = _ARITH[self.take()[1]]
            right = self.mul()
            left = (lambda a, b, f: lambda x: f(a(x), b(x)))(left, right, fn)
        return left

    def mul(self) -> Expr:
        left = self.atom()
        while self.peek() in (("name", "mul"), ("name", "div"), ("name", "mod")):
            fn = _ARITH[self.take()[1]]
            right = self.atom()
            left = (lambda a, b, f: lambda x: f(a(x), b(x)))(left, right, fn)
        return left

    def atom(self) -> Expr:
        kind, text = self.take()
        if kind == "op" and text == "(":
            e = self.or_()
            if self.take() != ("op", ")"):
                raise ValidationFailed("$filter 缺少 ) / missing )")
            return e
        if kind == "num":
            value: Any = float(text) if any(c in text for c in ".eE") else int(text)
            return lambda x: value
        if kind == "str":
            s = text[1:-1].replace("''", "'")
            return lambda x: s
        if kind == "dt":
            from datetime import datetime

            d = datetime.fromisoformat(text)
            return lambda x: d
        if kind == "name":
            if text in ("true", "false"):
                b = text == "true"
                return lambda x: b
            if text == "null":
                return lambda x: None
            if self.peek() == ("op", "("):
                if text not in _FUNCS:
                    raise ValidationFailed(f"不支持的函数 {text} / unsupported function")
                self.take()
                args = [self.or_()]
                while self.peek() == ("op", ","):
                    self.take()
                    args.append(self.or_())
                if self.take() != ("op", ")"):
                    raise ValidationFailed("$filter 缺少 ) / missing )")
                fn = _FUNCS[text]
                return lambda x: fn(*(a(x) for a in args))
            return lambda x: get_path(x, text)
        raise ValidationFailed(f"$filter 无法解析 {text!r} / cannot parse")


def _coerce(a: Any, b: Any) -> tuple[Any, Any]:
    """Datetimes compare with ISO strings; numbers with numbers."""
    from datetime import datetime

    if isinstance(a, datetime) and isinstance(b, str):
        b = _parse_dt(b)
    elif isinstance(b, datetime) and isinstance(a, str):
        a = _parse_dt(a)
    return a, b


def _parse_dt(s: str) -> Any:
    from datetime import datetime

    try:
        return datetime.fromisoformat(s.split("/")[0])
    except ValueError:
        return s


def compile_filter(text: str) -> Expr:
    return _Parser(text).parse()


def order(items: list[dict[str, Any]], spec: str) -> list[dict[str, Any]]:
    for part in reversed([p.strip() for p in spec.split(",") if p.strip()]):
        bits = part.split()
        path, desc = bits[0], len(bits) > 1 and bits[1].lower() == "desc"
        items = sorted(items, key=lambda e, p=path: (get_path(e, p) is None, _key(get_path(e, p))), reverse=desc)
    return items


def _key(v: Any) -> Any:
    return (0, v) if isinstance(v, int | float) else (1, str(v))
