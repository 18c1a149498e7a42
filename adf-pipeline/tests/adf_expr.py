"""A minimal evaluator of the Azure Data Factory expression language, for replaying templates.

Why not a library: the maintained one, Microsoft's `data-factory-testing-framework` (1.4),
evaluates expressions in a .NET assembly (net5.0) loaded through pythonnet's CoreCLR, so it
needs a .NET runtime of version 5 or newer. Debian 12's packages have none, PyPI has only
Microsoft's .NET Core 3.1 bundle (`dotnetcore2`, too old) and unofficial third-party
repackagings we will not put in a test chain, and its 0.2 series loads the CoreCLR at import
too. So this module implements the part of the language the templates use, and is strict
where Data Factory is strict or where its behaviour is not documented: an unknown function, a missing property without `?.`, a null passed to `concat`
or `string`, or a non-boolean condition is an error, never a silent default. A template that
only works because an evaluator is lenient must fail here.

Covered: `@expr` values, `@{expr}` string interpolation, `@@` escapes, string/number/boolean
literals, property access (`.name`, `?.name`, `[index]`, `?[index]`), and the functions in
FUNCTIONS below. Function names are case-insensitive, as in Data Factory; property names are
matched exactly.
"""

from __future__ import annotations

import datetime as _dt
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable


class ExpressionError(Exception):
    """An expression that does not parse or cannot be evaluated."""


# ----------------------------------------------------------------------------------------
# Syntax


@dataclass(frozen=True)
class Lit:
    value: Any


@dataclass(frozen=True)
class Call:
    name: str  # lower case
    args: tuple


@dataclass(frozen=True)
class Prop:
    target: Any
    key: Any  # a node (the index expression) or a str (a property name)
    safe: bool  # `?.` / `?[`


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c == "'":
            j, buf = i + 1, []
            while True:
                if j >= n:
                    raise ExpressionError(f"unterminated string literal in {text!r}")
                if text[j] == "'":
                    if j + 1 < n and text[j + 1] == "'":
                        buf.append("'")
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            out.append(("str", "".join(buf)))
            i = j + 1
        elif c.isdigit() or (c == "-" and i + 1 < n and text[i + 1].isdigit()):
            j = i + 1
            while j < n and (text[j].isdigit() or text[j] == "."):
                j += 1
            raw = text[i:j]
            out.append(("num", float(raw) if "." in raw else int(raw)))
            i = j
        elif c.isalpha() or c == "_":
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            out.append(("name", text[i:j]))
            i = j
        elif c == "?" and i + 1 < n and text[i + 1] in ".[":
            out.append(("?" + text[i + 1], None))
            i += 2
        elif c in "(),.[]":
            out.append((c, None))
            i += 1
        else:
            raise ExpressionError(f"unexpected character {c!r} in {text!r}")
    return out


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokens(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.toks[self.pos][0] if self.pos < len(self.toks) else None

    def take(self, kind: str) -> Any:
        if self.peek() != kind:
            raise ExpressionError(f"expected {kind!r} at token {self.pos} of {self.text!r}")
        tok = self.toks[self.pos]
        self.pos += 1
        return tok[1]

    def parse(self) -> Any:
        node = self.expr()
        if self.pos != len(self.toks):
            raise ExpressionError(f"unexpected trailing tokens in {self.text!r}")
        return node

    def expr(self) -> Any:
        kind = self.peek()
        if kind == "str":
            node: Any = Lit(self.take("str"))
        elif kind == "num":
            node = Lit(self.take("num"))
        elif kind == "name":
            name = self.take("name")
            if self.peek() == "(":
                self.take("(")
                args = []
                if self.peek() != ")":
                    args.append(self.expr())
                    while self.peek() == ",":
                        self.take(",")
                        args.append(self.expr())
                self.take(")")
                if name.lower() not in FUNCTIONS:
                    raise ExpressionError(f"unknown function {name!r} in {self.text!r}")
                node = Call(name.lower(), tuple(args))
            elif name in ("true", "false"):
                node = Lit(name == "true")
            else:
                raise ExpressionError(f"bare name {name!r} in {self.text!r}")
        else:
            raise ExpressionError(f"unexpected {kind!r} in {self.text!r}")
        while self.peek() in (".", "?.", "[", "?["):
            kind = self.peek()
            self.take(kind)
            if kind in (".", "?."):
                node = Prop(node, self.take("name"), kind == "?.")
            else:
                key = self.expr()
                self.take("]")
                node = Prop(node, key, kind == "?[")
        return node


def parse(text: str) -> Any:
    """The syntax tree of one expression (the text after `@`, or inside `@{…}`)."""
    return _Parser(text).parse()


def _interpolation_parts(s: str) -> list[tuple[bool, str]]:
    """Splits a string with `@{…}` into (is_expression, text) parts."""
    parts: list[tuple[bool, str]] = []
    i, start, n = 0, 0, len(s)
    while i < n:
        if s.startswith("@@", i):
            # Escaped `@`.
            parts.append((False, s[start:i] + "@"))
            i += 2
            start = i
        elif s.startswith("@{", i):
            parts.append((False, s[start:i]))
            j, in_str = i + 2, False
            while j < n:
                ch = s[j]
                if ch == "'":
                    in_str = not in_str
                elif ch == "}" and not in_str:
                    break
                j += 1
            if j >= n:
                raise ExpressionError(f"unterminated @{{ in {s!r}")
            parts.append((True, s[i + 2 : j]))
            i = j + 1
            start = i
        else:
            i += 1
    parts.append((False, s[start:]))
    return [p for p in parts if p[0] or p[1]]


def expressions_in(s: str) -> list[str]:
    """The expression texts a string value holds (none for a literal)."""
    if s.startswith("@") and not s.startswith("@@") and not s.startswith("@{"):
        return [s[1:]]
    if "@{" in s:
        return [t for is_expr, t in _interpolation_parts(s) if is_expr]
    return []


def walk(node: Any) -> Any:
    """Every node of a syntax tree, depth first."""
    yield node
    if isinstance(node, Call):
        for a in node.args:
            yield from walk(a)
    elif isinstance(node, Prop):
        yield from walk(node.target)
        if not isinstance(node.key, str):
            yield from walk(node.key)


# ----------------------------------------------------------------------------------------
# Evaluation


@dataclass
class Context:
    """What an expression can see: the pipeline (parameters and system variables), the
    results of the activities that ran, the variables, and the current ForEach item."""

    pipeline: dict[str, Any]
    activities: Callable[[str], dict[str, Any]]
    variables: dict[str, Any]
    item: Any = None
    has_item: bool = False
    now: Callable[[], _dt.datetime] = lambda: _dt.datetime.now(_dt.timezone.utc)


def to_string(v: Any) -> str:
    """Data Factory's string form of a value (`string()` and `@{…}`)."""
    if v is None:
        raise ExpressionError("a null cannot be turned into a string")
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def evaluate(node: Any, ctx: Context) -> Any:
    if isinstance(node, Lit):
        return node.value
    if isinstance(node, Prop):
        target = evaluate(node.target, ctx)
        key = node.key if isinstance(node.key, str) else evaluate(node.key, ctx)
        if target is None:
            if node.safe:
                return None
            raise ExpressionError(f"property {key!r} of a null")
        if isinstance(target, dict):
            if key in target:
                return target[key]
            if node.safe:
                return None
            raise ExpressionError(
                f"property {key!r} does not exist, available: {sorted(target)[:20]}"
            )
        if isinstance(target, list) and isinstance(key, int) and not isinstance(key, bool):
            if 0 <= key < len(target):
                return target[key]
            if node.safe:
                return None
            raise ExpressionError(f"index {key} out of range")
        raise ExpressionError(f"cannot take {key!r} of a {type(target).__name__}")
    if isinstance(node, Call):
        fn = FUNCTIONS[node.name]
        if node.name == "if":
            # Lazy: only the chosen branch is evaluated.
            if len(node.args) != 3:
                raise ExpressionError("if() takes 3 arguments")
            cond = _bool(evaluate(node.args[0], ctx), "if")
            return evaluate(node.args[1] if cond else node.args[2], ctx)
        args = [evaluate(a, ctx) for a in node.args]
        return fn(ctx, *args)
    raise ExpressionError(f"not an expression node: {node!r}")


def evaluate_string(s: str, ctx: Context) -> Any:
    """The value of a string property: an expression (`@…`), an interpolated string
    (`…@{…}…`) or a literal."""
    if s.startswith("@") and not s.startswith("@@") and not s.startswith("@{"):
        return evaluate(parse(s[1:]), ctx)
    if "@{" in s or "@@" in s:
        return "".join(
            to_string(evaluate(parse(t), ctx)) if is_expr else t
            for is_expr, t in _interpolation_parts(s)
        )
    return s


def is_expression_object(v: Any) -> bool:
    return isinstance(v, dict) and v.get("type") == "Expression" and set(v) == {"type", "value"}


def evaluate_value(v: Any, ctx: Context) -> Any:
    """Evaluates a property value: an `{"value": …, "type": "Expression"}` object, a string
    (which may itself be an expression) or a JSON structure holding either."""
    if is_expression_object(v):
        if not isinstance(v["value"], str):
            raise ExpressionError(f"an Expression's value must be a string: {v!r}")
        return evaluate_string(v["value"], ctx)
    if isinstance(v, str):
        return evaluate_string(v, ctx)
    if isinstance(v, list):
        return [evaluate_value(x, ctx) for x in v]
    if isinstance(v, dict):
        return {k: evaluate_value(x, ctx) for k, x in v.items()}
    return v


# ----------------------------------------------------------------------------------------
# Functions


def _bool(v: Any, fn: str) -> bool:
    if not isinstance(v, bool):
        raise ExpressionError(f"{fn}() expects booleans, got {v!r}")
    return v


def _num(v: Any, fn: str) -> int | float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ExpressionError(f"{fn}() expects numbers, got {v!r}")
    return v


def _str(v: Any, fn: str) -> str:
    if not isinstance(v, str):
        raise ExpressionError(f"{fn}() expects strings, got {v!r}")
    return v


def _arity(name: str, args: tuple, lo: int, hi: int | None = None) -> None:
    hi = lo if hi is None else hi
    if not lo <= len(args) <= hi:
        raise ExpressionError(f"{name}() takes {lo}..{hi} arguments, got {len(args)}")


def _concat(ctx: Context, *args: Any) -> Any:
    if not args:
        raise ExpressionError("concat() needs arguments")
    if all(isinstance(a, list) for a in args):
        return [x for a in args for x in a]
    return "".join(_str(a, "concat") for a in args)


def _contains(ctx: Context, collection: Any, value: Any) -> bool:
    if isinstance(collection, str):
        return _str(value, "contains") in collection
    if isinstance(collection, list):
        return value in collection
    if isinstance(collection, dict):
        return _str(value, "contains") in collection
    raise ExpressionError(f"contains() expects a string, an array or an object, got {collection!r}")


def _empty(ctx: Context, v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, (str, list, dict)):
        return len(v) == 0
    raise ExpressionError(f"empty() expects a string, an array or an object, got {v!r}")


def _int(ctx: Context, v: Any) -> int:
    if isinstance(v, bool):
        raise ExpressionError("int() of a boolean")
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            pass
    raise ExpressionError(f"int() cannot convert {v!r}")


def _json(ctx: Context, v: Any) -> Any:
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError as err:
            raise ExpressionError(f"json() of invalid JSON: {err}") from None
    return v


def _minmax(pick: Callable) -> Callable:
    def f(ctx: Context, *args: Any) -> Any:
        values = args[0] if len(args) == 1 and isinstance(args[0], list) else list(args)
        if not values:
            raise ExpressionError("min()/max() need values")
        return pick(_num(v, "min/max") for v in values)

    return f


def _arith(op: Callable) -> Callable:
    def f(ctx: Context, a: Any, b: Any) -> Any:
        return op(_num(a, "arithmetic"), _num(b, "arithmetic"))

    return f


def _div(a: Any, b: Any) -> Any:
    if b == 0:
        raise ExpressionError("division by zero")
    if isinstance(a, int) and isinstance(b, int):
        return int(a / b)
    return a / b


def _substring(ctx: Context, s: Any, start: Any, length: Any = None) -> str:
    s = _str(s, "substring")
    start = _int(ctx, start)
    end = len(s) if length is None else start + _int(ctx, length)
    if start < 0 or end > len(s) or end < start:
        raise ExpressionError(f"substring({s!r}, {start}, {length}) is out of range")
    return s[start:end]


def _compare(op: Callable) -> Callable:
    def f(ctx: Context, a: Any, b: Any) -> bool:
        if isinstance(a, str) and isinstance(b, str):
            return op(a, b)
        return op(_num(a, "compare"), _num(b, "compare"))

    return f


def parse_timestamp(s: Any) -> _dt.datetime:
    s = _str(s, "timestamp")
    text = s.strip().replace("Z", "+00:00")
    if "." in text:
        # Python takes at most 6 fractional digits; Data Factory writes 7.
        head, _, rest = text.partition(".")
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    try:
        value = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise ExpressionError(f"not a timestamp: {s!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.timezone.utc)
    return value.astimezone(_dt.timezone.utc)


def format_timestamp(t: _dt.datetime) -> str:
    """The round-trip format (`o`) Data Factory uses by default, in UTC."""
    t = t.astimezone(_dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}0Z"


def _utcnow(ctx: Context, fmt: Any = None) -> str:
    if fmt is not None:
        raise ExpressionError("utcNow() with a format is not implemented here")
    return format_timestamp(ctx.now())


def _add_seconds(ctx: Context, ts: Any, seconds: Any, fmt: Any = None) -> str:
    if fmt is not None:
        raise ExpressionError("addSeconds() with a format is not implemented here")
    delta = _dt.timedelta(seconds=_num(seconds, "addSeconds"))
    return format_timestamp(parse_timestamp(ts) + delta)


_EPOCH_TICKS = 621355968000000000  # ticks (100 ns since 0001-01-01) of 1970-01-01


def _ticks(ctx: Context, ts: Any) -> int:
    t = parse_timestamp(ts)
    delta = t - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
    micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    return _EPOCH_TICKS + micros * 10


def _activity(ctx: Context, name: Any) -> dict[str, Any]:
    return ctx.activities(_str(name, "activity"))


def _item(ctx: Context) -> Any:
    if not ctx.has_item:
        raise ExpressionError("item() outside a ForEach")
    return ctx.item


def _variables(ctx: Context, name: Any) -> Any:
    name = _str(name, "variables")
    if name not in ctx.variables:
        raise ExpressionError(f"variable {name!r} is not declared")
    return ctx.variables[name]


def _fixed(name: str, lo: int, hi: int | None, fn: Callable) -> Callable:
    def f(ctx: Context, *args: Any) -> Any:
        _arity(name, args, lo, hi)
        return fn(ctx, *args)

    return f


def _equals(ctx: Context, a: Any, b: Any) -> bool:
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers):
        if isinstance(a, bool) or isinstance(b, bool):
            return a is b
        return a == b
    return type(a) is type(b) and a == b


def _length(ctx: Context, v: Any) -> int:
    if isinstance(v, (str, list)):
        return len(v)
    raise ExpressionError(f"length() expects a string or an array, got {v!r}")


def _uri_component(ctx: Context, s: Any) -> str:
    return urllib.parse.quote(_str(s, "encodeUriComponent"), safe="-_.~")


FUNCTIONS: dict[str, Callable] = {
    "pipeline": _fixed("pipeline", 0, 0, lambda ctx: ctx.pipeline),
    "activity": _fixed("activity", 1, 1, _activity),
    "item": _fixed("item", 0, 0, _item),
    "variables": _fixed("variables", 1, 1, _variables),
    "if": lambda ctx, *a: None,  # evaluated lazily in evaluate()
    "concat": _concat,
    "equals": _fixed("equals", 2, 2, _equals),
    "not": _fixed("not", 1, 1, lambda ctx, a: not _bool(a, "not")),
    "and": lambda ctx, *a: (_arity("and", a, 2, 99), all([_bool(x, "and") for x in a]))[1],
    "or": lambda ctx, *a: (_arity("or", a, 2, 99), any([_bool(x, "or") for x in a]))[1],
    "contains": _fixed("contains", 2, 2, _contains),
    "createarray": lambda ctx, *a: list(a),
    "coalesce": lambda ctx, *a: next((x for x in a if x is not None), None),
    "empty": _fixed("empty", 1, 1, _empty),
    "string": _fixed("string", 1, 1, lambda ctx, v: to_string(v)),
    "int": _fixed("int", 1, 1, _int),
    "json": _fixed("json", 1, 1, _json),
    "min": _minmax(min),
    "max": _minmax(max),
    "add": _fixed("add", 2, 2, _arith(lambda a, b: a + b)),
    "sub": _fixed("sub", 2, 2, _arith(lambda a, b: a - b)),
    "mul": _fixed("mul", 2, 2, _arith(lambda a, b: a * b)),
    "div": _fixed("div", 2, 2, _arith(_div)),
    "length": _fixed("length", 1, 1, _length),
    "substring": _fixed("substring", 2, 3, _substring),
    "startswith": _fixed("startsWith", 2, 2, lambda ctx, s, x: _str(s, "startsWith").lower()
                         .startswith(_str(x, "startsWith").lower())),
    "endswith": _fixed("endsWith", 2, 2, lambda ctx, s, x: _str(s, "endsWith").lower()
                       .endswith(_str(x, "endsWith").lower())),
    "replace": _fixed("replace", 3, 3, lambda ctx, s, old, new: _str(s, "replace")
                      .replace(_str(old, "replace"), _str(new, "replace"))),
    "tolower": _fixed("toLower", 1, 1, lambda ctx, s: _str(s, "toLower").lower()),
    "toupper": _fixed("toUpper", 1, 1, lambda ctx, s: _str(s, "toUpper").upper()),
    "encodeuricomponent": _fixed("encodeUriComponent", 1, 1, _uri_component),
    "uricomponent": _fixed("uriComponent", 1, 1, _uri_component),
    "utcnow": _fixed("utcNow", 0, 1, _utcnow),
    "addseconds": _fixed("addSeconds", 2, 3, _add_seconds),
    "ticks": _fixed("ticks", 1, 1, _ticks),
    "greater": _fixed("greater", 2, 2, _compare(lambda a, b: a > b)),
    "greaterorequals": _fixed("greaterOrEquals", 2, 2, _compare(lambda a, b: a >= b)),
    "less": _fixed("less", 2, 2, _compare(lambda a, b: a < b)),
    "lessorequals": _fixed("lessOrEquals", 2, 2, _compare(lambda a, b: a <= b)),
}
