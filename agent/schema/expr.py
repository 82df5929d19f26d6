"""The expression language: a small, safe arithmetic language over instance facts, in which
tuning values and ``when`` conditions are written (and the variables a template names).

Text is parsed with :func:`ast.parse` and checked against an explicit whitelist (numbers,
strings, facts, arithmetic, comparisons, ``in`` a literal list, ``and``/``or``/``not``,
``a if c else b`` and calls of ``min max clamp int round floor ceil``); it is never passed to
``eval`` or ``exec``. Evaluation walks the checked tree with every operation bounded, so any
problem is an :class:`ExprError` with a one-line message and nothing else escapes.
"""

from __future__ import annotations

import ast
import copy
import functools
import math
import string
import warnings
from collections.abc import Callable, Mapping
from dataclasses import field
from typing import Literal

from agent.errors import closest
from agent.frozen import frozen
from agent.readfile import read_template

Value = int | float | str
Kind = Literal["number", "string", "any"]

MACHINE_FACTS: dict[str, type] = {  # agent.instance.facts.Facts: the machine and its type
    "memory_mib": int,  # a program's share of the memory budget, where it has one
    "machine_memory_mib": int,
    "vcpus": int,
    "instance_type": str,
    "family": str,
    "generation": int,
    "size": str,
    "arch": str,
    "instance_memory_mib": int,
    "instance_vcpus": int,
}
LAUNCH_FACTS: dict[str, type] = {  # agent.instance.context: where and as what this instance runs
    "region": str,
    "account": str,
    "availability_zone": str,
    "group": str,
}
FACTS: dict[str, type] = {**MACHINE_FACTS, **LAUNCH_FACTS}
FUNCTIONS: dict[str, tuple[int, int | None]] = {  # name -> (min, max) positional arguments
    "min": (1, None),
    "max": (1, None),
    "clamp": (3, 3),
    "int": (1, 1),
    "round": (1, 2),
    "floor": (1, 1),
    "ceil": (1, 1),
    "tag": (1, 1),  # tag('Environment'): an instance tag, '' when absent
}
TAG = "tag:"  # tags travel with the facts: "tag:KEY" -> value; "tag:" itself: tags are known
MAX_LENGTH = 1000  # characters of expression text
MAX_DEPTH = 50  # nesting of the syntax tree
MAX_MAGNITUDE = 1e15  # of any number, literal or computed
MAX_EXPONENT = 64
MAX_NDIGITS = 15  # round(x, n)

_NUM, _STR = "number", "string"
_KINDS: dict[type, frozenset[str]] = {int: frozenset({_NUM}), float: frozenset({_NUM}),
                                      str: frozenset({_STR})}
_KIND_SETS: dict[Kind, frozenset[str]] = {"number": frozenset({_NUM}),
                                          "string": frozenset({_STR}),
                                          "any": frozenset({_NUM, _STR})}
_ARITH: dict[type[ast.operator], str] = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
    ast.Mod: "%", ast.Pow: "**",
}
_ORDER: dict[type[ast.cmpop], Callable[[float, float], bool]] = {
    ast.Lt: lambda a, b: a < b, ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b,
}
_EQUALITY = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)
_FORBIDDEN: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access is not allowed",
    ast.Subscript: "subscripts (x[...]) are not allowed",
    ast.Slice: "subscripts (x[...]) are not allowed",
    ast.Lambda: "lambda is not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.FormattedValue: "f-strings are not allowed",
    ast.NamedExpr: "assignment expressions (:=) are not allowed",
    ast.Starred: "starred expressions (*x) are not allowed",
    ast.Dict: "dict literals are not allowed",
    ast.Set: "set literals are not allowed",
    ast.Tuple: "tuples and lists are only allowed on the right of 'in'",
    ast.List: "tuples and lists are only allowed on the right of 'in'",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
}


class ExprError(ValueError):
    """An expression that is not valid or cannot be evaluated."""


@frozen()
class ClampStep:
    """One ``clamp``/``min``/``max`` call met while evaluating: was a bound applied?"""

    function: str
    value: float  # the input: clamp's and min/max's first argument
    bounds: tuple[float, ...]
    result: float
    applied: Literal["lower", "upper"] | None

    def __str__(self) -> str:
        args = ", ".join(repr(v) for v in (self.value, *self.bounds))
        note = {None: "within bounds", "lower": "raised to lower bound",
                "upper": "capped at upper bound"}[self.applied]
        return f"{self.function}({args}) = {self.result!r} ({note})"


@frozen()
class Explanation:
    """How a value came about: the facts substituted, the result, the clamps applied."""

    result: Value
    substituted: str
    clamps: tuple[ClampStep, ...]

    def as_dict(self) -> dict[str, object]:
        """JSON-able form (for ``agent plan --json``)."""
        return {"result": self.result, "rendered": render_value(self.result),
                "substituted": self.substituted, "clamps": [str(c) for c in self.clamps]}


@frozen()
class Expression:
    """A checked expression, ready to evaluate against facts."""

    text: str
    names: frozenset[str]  # the facts (and other names) it reads
    kind: Kind  # what it can return, as far as known statically
    tree: ast.expr = field(repr=False, compare=False)
    tags: frozenset[str] = frozenset()  # the tag keys it reads (tag('KEY'))

    def evaluate(self, facts: Mapping[str, Value]) -> Value:
        """The value for these facts, or ExprError."""
        return _Evaluator(facts, None).run(self.tree)

    def explain(self, facts: Mapping[str, Value]) -> Explanation:
        """The value with its derivation (facts substituted, clamps met)."""
        steps: list[ClampStep] = []
        result = _Evaluator(facts, steps).run(self.tree)
        substituted = _substitute(self.tree, facts) if self.names else self.text.strip()
        return Explanation(result, substituted, tuple(steps))


def render_value(value: Value) -> str:
    """Text for a value: whole numbers without a decimal point, floats shortest, strings as is."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else repr(value)


def compile_expression(text: str, names: Mapping[str, Kind] | None = None) -> Expression:
    """Parse and check ``text``; raise ExprError naming the problem.

    ``names`` are variables it may read besides the facts (a profile's earlier values), each
    with its kind. A text is compiled once: the configuration's field rules and the compiled
    forms its sections hold share the result (an Expression is immutable).
    """
    return _compiled(text, tuple(sorted((names or {}).items())))


@functools.lru_cache(maxsize=1024)
def _compiled(text: str, names: tuple[tuple[str, Kind], ...]) -> Expression:
    source = text.strip()
    if not source:
        raise ExprError("empty expression")
    if len(source) > MAX_LENGTH:
        raise ExprError(f"expression is too long ({len(source)} characters, at most {MAX_LENGTH})")
    if "\0" in source:
        raise ExprError(f"expression contains a NUL character (at {source.index(chr(0))})")
    try:
        with warnings.catch_warnings():  # e.g. invalid escapes: not for the journal
            warnings.simplefilter("ignore")
            tree = ast.parse(source, mode="eval").body
    except SyntaxError as exc:
        raise ExprError(_syntax_message(source, exc)) from None
    except (ValueError, RecursionError, MemoryError):
        raise ExprError("expression is too complex") from None
    _check_depth(tree)
    known = {name: _KINDS[FACTS[name]] for name in FACTS}
    known.update({name: _KIND_SETS[kind] for name, kind in names})
    checker = _Checker(known)
    kinds = checker.check(tree)
    _check_constants(tree)
    kind: Kind = "number" if kinds == {_NUM} else "string" if kinds == {_STR} else "any"
    return Expression(text, frozenset(checker.names), kind, tree, frozenset(checker.tags))


def tag_scope(tags: Mapping[str, str]) -> dict[str, str]:
    """The facts that carry ``tags`` to tag() (add them to the facts of an evaluation)."""
    return {TAG: "", **{TAG + key: value for key, value in tags.items()}}


def template_names(text: str) -> list[str]:
    """The variables of a :class:`string.Template` text (``${NAME}`` or ``$NAME``), in order.

    Raise ExprError at a ``$`` that starts no placeholder (``$$`` is a literal ``$``).
    """
    template = string.Template(text)
    for match in template.pattern.finditer(text):
        if match.group("invalid") is not None:
            start = match.start()
            line = text.count("\n", 0, start) + 1
            column = start - text.rfind("\n", 0, start)
            near = text[start:start + 20].split("\n", maxsplit=1)[0]
            raise ExprError(f"invalid placeholder {near!r} at line {line}, column {column} "
                            "(write $$ for a literal $)")
    return template.get_identifiers()


def template_file_names(path: str) -> list[str]:
    """The variables a template source uses; [] while it cannot be read or parsed (whoever
    renders it says why)."""
    try:
        return template_names(read_template(path))
    except ValueError:
        return []


def _syntax_message(source: str, exc: SyntaxError) -> str:
    lines = source.splitlines() or [""]
    lineno = min(max(exc.lineno or 1, 1), len(lines))
    col = exc.offset or len(lines[lineno - 1]) + 1  # 0: the parser ran out of text
    near = lines[lineno - 1][col - 1:col + 19]
    where = f"line {lineno}, column {col}" if len(lines) > 1 else f"column {col}"
    at = f"near {near!r}" if near.strip() else "at the end"
    return f"syntax error at {where} ({at}): {exc.msg}"


def _check_depth(tree: ast.AST) -> None:
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ExprError(f"expression is nested too deeply (at most {MAX_DEPTH} levels)")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def _uses_facts(node: ast.AST) -> bool:
    """Whether ``node`` reads a variable or a tag (a checked tree names functions only when
    calling them)."""
    return any(isinstance(n, ast.Name) and (n.id not in FUNCTIONS or n.id == "tag")
               for n in ast.walk(node))


def _check_constants(node: ast.expr) -> Value | None:
    """Evaluate every largest fact-free part now, so `1/0` is a load error, not a boot one;
    also a constant zero divisor and constant clamp bounds the wrong way round."""
    if not _uses_facts(node):
        return _Evaluator({}, None).run(node)
    values = {id(child): _check_constants(child) for child in ast.iter_child_nodes(node)
              if isinstance(child, ast.expr) and not isinstance(child, ast.Tuple | ast.List |
                                                                 ast.Name)}
    match node:
        case ast.BinOp(op=ast.Div() | ast.FloorDiv() | ast.Mod(), right=right):
            if values.get(id(right)) == 0:
                raise _zero_division(node)
        case ast.Call(func=ast.Name(id="clamp"), args=[_, low, high]):
            lo, hi = values.get(id(low)), values.get(id(high))
            if isinstance(lo, int | float) and isinstance(hi, int | float) and lo > hi:
                raise ExprError(f"clamp(): lower bound {lo!r} is above upper bound {hi!r}")
    return None


class _Checker:
    """The whitelist: every node is allowed explicitly; returns the kinds a node can have."""

    def __init__(self, known: Mapping[str, frozenset[str]]) -> None:
        self.known = known
        self.names: set[str] = set()
        self.tags: set[str] = set()

    def check(self, node: ast.AST) -> set[str]:
        match node:
            case ast.Constant(value=value):
                return {self._constant(value)}
            case ast.Name(id=name):
                return self._name(name)
            case ast.UnaryOp(op=ast.Not(), operand=operand):
                self.check(operand)
                return {_NUM}
            case ast.UnaryOp(op=ast.UAdd() | ast.USub(), operand=operand):
                self._numeric(operand, "arithmetic on strings is not allowed")
                return {_NUM}
            case ast.BinOp(left=left, op=op, right=right) if type(op) in _ARITH:
                self._numeric(left, "arithmetic on strings is not allowed")
                self._numeric(right, "arithmetic on strings is not allowed")
                return {_NUM}
            case ast.BoolOp(values=values):
                return set().union(*(self.check(v) for v in values))
            case ast.IfExp(test=test, body=body, orelse=orelse):
                self.check(test)
                return self.check(body) | self.check(orelse)
            case ast.Compare(left=left, ops=ops, comparators=comparators):
                self._compare(left, ops, comparators)
                return {_NUM}
            case ast.Call(func=ast.Name(id="tag")):
                self._tag(node)
                return {_STR}
            case ast.Call():
                self._call(node)
                return {_NUM}
            case ast.BinOp(op=op) | ast.UnaryOp(op=op):
                raise ExprError(f"operator {_op_text(op)!r} is not allowed")
        raise ExprError(_FORBIDDEN.get(type(node), f"{type(node).__name__} is not allowed"))

    @staticmethod
    def _constant(value: object) -> str:
        if isinstance(value, str):
            return _STR
        if isinstance(value, bool) or value is None or value is Ellipsis:
            raise ExprError(f"{value!r} is not allowed (use numbers or strings)")
        if isinstance(value, int | float):
            _bounded(value if math.isfinite(value) else math.inf, "number literal")
            return _NUM
        raise ExprError(f"{type(value).__name__} literals are not allowed")

    def _name(self, name: str) -> set[str]:
        if name in FUNCTIONS:
            raise ExprError(f"{name!r} is a function: call it, as in {name}(...)")
        if name in self.known:
            self.names.add(name)
            return set(self.known[name])
        close = closest(name, self.known)
        hint = (f" (did you mean {close[0]!r}?)" if close
                else f" (facts: {', '.join(self.known)})")
        raise ExprError(f"unknown name {name!r}{hint}")

    def _numeric(self, node: ast.AST, message: str) -> None:
        if self.check(node) == {_STR}:
            raise ExprError(message)

    def _compare(self, left: ast.expr, ops: list[ast.cmpop], comparators: list[ast.expr]) -> None:
        if len(ops) > 1 and any(isinstance(op, ast.In | ast.NotIn) for op in ops):
            raise ExprError("'in' cannot be chained with other comparisons")
        left_kinds = self.check(left)
        for op, right in zip(ops, comparators, strict=True):
            if isinstance(op, ast.In | ast.NotIn):
                right_kinds = self._choices(right)
            elif isinstance(op, ast.Eq | ast.NotEq):
                right_kinds = self.check(right)
            elif type(op) in _ORDER:
                if left_kinds == {_STR} or self.check(right) == {_STR}:
                    raise ExprError("strings can only be compared with ==, != or in")
                right_kinds = {_NUM}
            else:
                raise ExprError(f"operator {_op_text(op)!r} is not allowed (use == or !=)")
            if len(left_kinds) == 1 and len(right_kinds) == 1 and left_kinds != right_kinds:
                raise ExprError("a string is compared with a number (they are never equal)")
            left_kinds = right_kinds

    def _choices(self, node: ast.expr) -> set[str]:
        if not isinstance(node, ast.Tuple | ast.List):
            raise ExprError("the right of 'in' must be a literal list, as in "
                            "family in (\"t3\", \"t4g\") (one value: (\"t3\",) or ==)")
        if not node.elts:
            raise ExprError("the list on the right of 'in' is empty")
        kinds: set[str] = set()
        for element in node.elts:
            if not isinstance(element, ast.Constant):
                raise ExprError("the list on the right of 'in' may hold only numbers and strings")
            kinds.add(self._constant(element.value))
        return kinds

    def _call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute):
            raise ExprError("attribute access is not allowed")
        if not isinstance(func, ast.Name):
            raise ExprError(f"only these functions can be called: {', '.join(FUNCTIONS)}")
        if func.id not in FUNCTIONS:
            raise ExprError(f"{func.id!r} is not a function here "
                            f"(functions: {', '.join(FUNCTIONS)})")
        if node.keywords:
            raise ExprError(f"{func.id}(): keyword arguments are not allowed")
        if any(isinstance(arg, ast.Starred) for arg in node.args):
            raise ExprError(f"{func.id}(): starred arguments (*x) are not allowed")
        low, high = FUNCTIONS[func.id]
        if len(node.args) < low or (high is not None and len(node.args) > high):
            want = f"{low}" if low == high else f"{low} or {high}" if high else f"at least {low}"
            plural = "s" * (want != "1" and not want.endswith(" 1"))
            raise ExprError(f"{func.id}() takes {want} argument{plural}, got {len(node.args)}")
        for arg in node.args:
            self._numeric(arg, f"{func.id}() needs numbers, not strings")

    def _tag(self, node: ast.Call) -> None:
        match node:
            case ast.Call(args=[ast.Constant(value=str() as key)], keywords=[]) if key:
                self.tags.add(key)
            case _:
                raise ExprError("tag() takes one tag key as a string, as in "
                                "tag('Environment')")


def _op_text(op: ast.AST) -> str:
    names = {ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^", ast.LShift: "<<",
             ast.RShift: ">>", ast.MatMult: "@", ast.Invert: "~", ast.Is: "is",
             ast.IsNot: "is not"}
    return names.get(type(op), type(op).__name__)


def _bounded(value: float, what: str) -> float:
    if math.isnan(value):
        raise ExprError(f"{what} is not a number (NaN)")
    if abs(value) > MAX_MAGNITUDE:
        raise ExprError(f"{what} is out of range (magnitude above {MAX_MAGNITUDE:g})")
    return value


class _Evaluator:
    """Walks a checked tree; every value is an int, float or str, every number bounded."""

    def __init__(self, facts: Mapping[str, Value], steps: list[ClampStep] | None) -> None:
        self.facts = facts
        self.steps = steps

    def run(self, node: ast.expr) -> Value:
        try:
            return self.eval(node)
        except ExprError:
            raise
        except Exception as exc:  # a guard we missed must still be one line, not a traceback
            raise ExprError(f"cannot evaluate: {type(exc).__name__}: {exc}") from None

    def eval(self, node: ast.expr) -> Value:
        match node:
            case ast.Constant(value=int() | float() | str() as value):  # checked at compile time
                return value
            case ast.Name(id=name):
                return self._fact(name)
            case ast.UnaryOp(op=ast.Not(), operand=operand):
                return int(not self.eval(operand))
            case ast.UnaryOp(op=op, operand=operand):
                value = self._number(self.eval(operand), "arithmetic")
                return _bounded(-value if isinstance(op, ast.USub) else +value, "result")
            case ast.BinOp(left=left, op=op, right=right):
                a = self._number(self.eval(left), "arithmetic")
                b = self._number(self.eval(right), "arithmetic")
                return _arith(op, a, b, node)
            case ast.BoolOp(op=op, values=values):
                return self._boolean(isinstance(op, ast.And), values)
            case ast.IfExp(test=test, body=body, orelse=orelse):
                return self.eval(body) if self.eval(test) else self.eval(orelse)
            case ast.Compare(left=left, ops=ops, comparators=comparators):
                return self._compare(left, ops, comparators)
            case ast.Call(func=ast.Name(id="tag"), args=[ast.Constant(value=str() as key)]):
                return self._tag(key)
            case ast.Call(func=ast.Name(id=name), args=args):
                return self._call(name, [self.eval(arg) for arg in args])
        raise ExprError(f"{type(node).__name__} is not allowed")

    def _fact(self, name: str) -> Value:
        if name not in self.facts:
            raise ExprError(f"{'fact ' if name in FACTS else ''}{name!r} is not available")
        value = self.facts[name]
        if isinstance(value, str):
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ExprError(f"fact {name!r} is not a number or string")
        return _bounded(value, f"fact {name!r}")

    def _tag(self, key: str) -> str:
        if TAG not in self.facts:
            raise ExprError(f"tag({key!r}): the instance's tags are not known here")
        value = self.facts.get(TAG + key, "")
        return value if isinstance(value, str) else ""

    @staticmethod
    def _number(value: Value, what: str) -> float:
        if isinstance(value, str):
            raise ExprError(f"{what} on strings is not allowed ({value!r})")
        return value

    def _boolean(self, is_and: bool, values: list[ast.expr]) -> Value:
        result: Value = 0
        for node in values:
            result = self.eval(node)
            if bool(result) != is_and:  # `and` stops at the first false, `or` at the first true
                break
        return result

    def _compare(self, left: ast.expr, ops: list[ast.cmpop], rights: list[ast.expr]) -> int:
        a = self.eval(left)
        for op, right in zip(ops, rights, strict=True):
            if isinstance(op, ast.In | ast.NotIn):  # never chained: checked at compile time
                choices = [e.value for e in right.elts]  # type: ignore[attr-defined]
                return int((a in choices) == isinstance(op, ast.In))
            b = self.eval(right)
            if isinstance(op, ast.Eq | ast.NotEq):
                ok = (a == b) == isinstance(op, ast.Eq)
            else:
                ok = _ORDER[type(op)](self._number(a, "ordering"), self._number(b, "ordering"))
            if not ok:
                return 0
            a = b
        return 1

    def _call(self, name: str, args: list[Value]) -> Value:
        nums = [self._number(arg, f"{name}()") for arg in args]
        if name in ("min", "max", "clamp"):
            return self._clamp(name, nums)
        if name == "round" and len(nums) == 2:
            ndigits = nums[1]
            if not isinstance(ndigits, int) or abs(ndigits) > MAX_NDIGITS:
                raise ExprError(f"round(): digits must be a whole number from "
                                f"-{MAX_NDIGITS} to {MAX_NDIGITS}, got {ndigits!r}")
            return round(nums[0], ndigits)
        convert: dict[str, Callable[[float], int]] = {
            "int": int, "round": round, "floor": math.floor, "ceil": math.ceil}
        return convert[name](nums[0])

    def _clamp(self, name: str, nums: list[float]) -> float:
        value, bounds = nums[0], tuple(nums[1:])
        applied: Literal["lower", "upper"] | None = None
        if name == "clamp":
            low, high = bounds
            if low > high:
                raise ExprError(f"clamp(): lower bound {low!r} is above upper bound {high!r}")
            result = low if value < low else high if value > high else value
            applied = "lower" if value < low else "upper" if value > high else None
        else:
            result = min(nums) if name == "min" else max(nums)
            if result != value:
                applied = "upper" if name == "min" else "lower"
        if self.steps is not None:
            self.steps.append(ClampStep(name, value, bounds, result, applied))
        return result


_OPERATIONS: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "/": lambda a, b: a / b, "//": lambda a, b: a // b, "%": lambda a, b: a % b,
}


def _arith(op: ast.operator, a: float, b: float, node: ast.BinOp) -> float:
    """One bounded arithmetic operation."""
    symbol = _ARITH[type(op)]
    if symbol in ("/", "//", "%") and b == 0:
        raise _zero_division(node)
    if symbol == "**":
        return _power(a, b, node)
    return _bounded(_OPERATIONS[symbol](a, b), f"result of {ast.unparse(node)}")


def _zero_division(node: ast.BinOp) -> ExprError:
    kind = "modulo" if isinstance(node.op, ast.Mod) else "division"
    return ExprError(f"{kind} by zero in {ast.unparse(node)}")


def _power(a: float, b: float, node: ast.expr) -> float:
    if abs(b) > MAX_EXPONENT:
        raise ExprError(f"exponent {b!r} is too large (at most {MAX_EXPONENT}) in "
                        f"{ast.unparse(node)}")
    if a == 0 and b < 0:
        raise ExprError(f"zero to a negative power in {ast.unparse(node)}")
    if a < 0 and not float(b).is_integer():
        raise ExprError(f"negative number to a fractional power in {ast.unparse(node)}")
    try:
        result = a**b
    except OverflowError:
        raise ExprError(f"result of {ast.unparse(node)} is out of range") from None
    return _bounded(result, f"result of {ast.unparse(node)}")


def _substitute(tree: ast.expr, facts: Mapping[str, Value]) -> str:
    """The expression's text with each fact replaced by its value."""

    class Substitute(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.expr:
            if node.id not in facts:
                return node
            value = facts[node.id]
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                return ast.UnaryOp(op=ast.USub(), operand=ast.Constant(-value))
            return ast.Constant(value)

    return ast.unparse(Substitute().visit(copy.deepcopy(tree)))
