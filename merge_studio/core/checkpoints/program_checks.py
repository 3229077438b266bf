"""Checks that make a serialized ``torch.export`` program safe to rebuild.

PyTorch's deserializer trusts its input: shape expressions are parsed with
``sympy.sympify`` (which evaluates text as Python) and a node's target may name
any attribute reachable from ``torch``, ``math`` or ``operator``. We accept only
what ``torch.export`` itself writes: expressions made of symbols, numbers,
arithmetic and a short list of sympy functions, and call targets that are
PyTorch operators or plain arithmetic.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from typing import Any

import torch

from merge_studio.errors import UnsafeCheckpointError

MAX_EXPRESSION_CHARS = 8192
MAX_EXPRESSION_NODES = 4000
MAX_EXPONENT = 64
MAX_POWERS = 3
MAX_LITERAL = 2**63
MAX_NESTING = 400

_SYMBOL = re.compile(r"[a-z]{1,4}\d{1,9}\Z")
_DECIMAL = re.compile(r"-?\d{1,30}(\.\d{0,30})?([eE][-+]?\d{1,3})?\Z")
# sympy classes and functions that torch.export writes (it serialises expressions with srepr)
_SYMPY_CALLS = frozenset({
    "Symbol", "Integer", "Float", "Rational", "Add", "Mul", "Pow", "Max", "Min", "Mod", "Abs",
    "floor", "ceiling", "sqrt", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "StrictLessThan",
    "StrictGreaterThan", "LessThan", "GreaterThan", "Equality", "Unequality", "And", "Or", "Not",
    "Piecewise", "ExprCondPair", "Tuple",
    # torch.utils._sympy.functions, as named by the deserializer
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt",
    "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv",
    "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal",
    "ToFloat", "Identity",
})
_TORCH_GENERATED_CALL = re.compile(r"(OpaqueUnaryFn|BitwiseFn)_[A-Za-z0-9_]{1,40}\Z")
_CONSTANTS = frozenset({"True", "False", "true", "false", "oo", "zoo", "nan", "int_oo"})
_ASSUMPTIONS = frozenset({
    "integer", "positive", "nonnegative", "negative", "nonpositive", "real", "finite", "nonzero",
    "even", "odd", "zero", "infinite", "rational", "extended_real", "commutative", "evaluate",
})
# calls whose second argument is an exponent or shift: it must stay small or symbolic
_POWER_CALLS = frozenset({"Pow", "PowByNatural", "FloatPow", "LShift"})
_BIN_OPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.BitAnd, ast.BitOr)
_UNARY_OPS = (ast.USub, ast.UAdd, ast.Invert, ast.Not)
_COMPARE_OPS = (ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq)

_TARGET = re.compile(
    r"(torch\.ops\.[A-Za-z_]\w*\.[A-Za-z_]\w*(\.[A-Za-z_]\w*)?"
    r"|_operator\.[a-z_]+|math\.[a-z0-9_]+|torch\._?sym_[a-z0-9_]+|#[\w.:]+)\Z"
)
_SAFE_OPERATOR_FUNCTIONS = frozenset(
    getattr(operator, n)
    for n in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "abs", "eq", "ne",
              "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_", "invert", "lshift", "rshift",
              "getitem", "truth", "matmul", "floor", "ceil", "trunc", "sym_sqrt")
    if hasattr(operator, n)
)
_SAFE_MATH_FUNCTIONS = frozenset(getattr(math, n) for n in dir(math) if not n.startswith("_")
                                 and callable(getattr(math, n)))
_SAFE_TORCH_FUNCTIONS = frozenset(getattr(torch, n) for n in dir(torch) if n.startswith(("sym_", "_sym_")))


def _refuse(label: str, what: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"{label}: the program contains {what}, which torch.export never writes; "
        "rebuilding it could run code from the file",
        hint="only open programs exported by people you trust",
    )


def check_expression(text: str, label: str) -> None:
    """Allow only what torch.export writes for shape expressions (``srepr`` of sympy).

    The text is parsed (never evaluated) and every node checked: calls only to
    sympy and torch's shape functions, names only symbols and constants, no
    attribute access, and exponents small or symbolic so nothing explodes.
    """
    def refuse(why: str) -> UnsafeCheckpointError:
        return _refuse(label, f"the shape expression {text[:80]!r} ({why})")

    if len(text) > MAX_EXPRESSION_CHARS:
        raise refuse(f"{len(text)} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise refuse("not an expression") from exc
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_EXPRESSION_NODES:
        raise refuse("too large")
    powers = sum(
        1 for n in nodes
        if (isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow))
        or (isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in _POWER_CALLS)
    )
    if powers > MAX_POWERS:
        raise refuse(f"{powers} powers")
    for node in nodes:
        why = _bad_expression_node(node)
        if why:
            raise refuse(why)


def _bad_expression_node(node: ast.AST) -> str | None:
    """Why a node is not allowed in a shape expression, or ``None``."""
    if isinstance(node, (ast.Expression, ast.Load, ast.keyword, *_BIN_OPS, *_UNARY_OPS, *_COMPARE_OPS)):
        if isinstance(node, ast.keyword) and not _allowed_keyword(node):
            return f"keyword {node.arg!r}"
        return None
    if isinstance(node, ast.Name):
        ok = node.id in _CONSTANTS or node.id in _SYMPY_CALLS or _SYMBOL.match(node.id) \
            or _TORCH_GENERATED_CALL.match(node.id)
        return None if ok else f"name {node.id!r}"
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or (isinstance(value, int) and abs(value) < MAX_LITERAL):
            return None
        if isinstance(value, float):
            return None
        if isinstance(value, str) and (_SYMBOL.match(value) or _DECIMAL.match(value)):
            return None
        return f"literal {str(value)[:20]!r}"
    if isinstance(node, ast.Call):
        func = node.func
        if not isinstance(func, ast.Name) or not (func.id in _SYMPY_CALLS or _TORCH_GENERATED_CALL.match(func.id)):
            return "a call to something other than a sympy function"
        if func.id in _POWER_CALLS and (len(node.args) != 2 or not _tame_exponent(node.args[1])):
            return f"a {func.id} with a large exponent"
        if any(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args) and func.id not in (
            "Symbol", "Float"
        ):
            return f"text passed to {func.id}"
        return None
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Pow) and not _tame_exponent(node.right):
            return "a large exponent"
        return None
    if isinstance(node, (ast.UnaryOp, ast.Compare, ast.BoolOp, ast.And, ast.Or, ast.Tuple)):
        return None
    return f"{type(node).__name__} syntax"


def _allowed_keyword(node: ast.keyword) -> bool:
    """``Symbol('s0', integer=True)`` assumptions and ``Float('1.5', precision=53)``."""
    value = node.value.value if isinstance(node.value, ast.Constant) else None
    if node.arg in _ASSUMPTIONS:
        return isinstance(value, bool)
    return node.arg == "precision" and type(value) is int and 0 < value <= 4096


def _tame_exponent(node: ast.AST) -> bool:
    """An exponent (or shift) must be a small number: ``2``, ``Integer(-1)``, ``Float('0.5')``."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        node = node.operand
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, str) and _DECIMAL.match(value):
            value = float(value)
        return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= MAX_EXPONENT
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("Integer", "Rational", "Float"):
        return bool(node.args) and all(_tame_exponent(a) for a in node.args)
    return False


def check_target(target: Any, label: str) -> None:
    """A node's call target must be a PyTorch operator or plain arithmetic."""
    if not isinstance(target, str) or not _TARGET.match(target) or "__" in target:
        raise _refuse(label, f"a call to {str(target)[:80]!r}")
    parts = target.split(".")
    if target.startswith("torch.ops.") and hasattr(type(torch.ops), parts[2]):
        raise _refuse(label, f"a call to {target!r}")


def check_program_json(data: dict[str, Any], label: str) -> None:
    """Walk the serialized program and check every expression and call target in it."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_NESTING:
            raise _refuse(label, "nesting deeper than any real program")
        if isinstance(value, dict):
            if "target" in value and "inputs" in value and "outputs" in value:
                check_target(value["target"], label)
            for key, item in value.items():
                if key == "expr_str":
                    if not isinstance(item, str):
                        raise _refuse(label, "a shape expression that is not text")
                    check_expression(item, label)
                elif isinstance(item, (dict, list)):
                    stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value if isinstance(item, (dict, list)))


def _allowed_call(target: Any) -> bool:
    if isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket, torch._ops.HigherOrderOperator)):
        return True
    try:
        return target in _SAFE_OPERATOR_FUNCTIONS or target in _SAFE_MATH_FUNCTIONS or target in _SAFE_TORCH_FUNCTIONS
    except TypeError:  # unhashable
        return False


def check_program_targets(program: torch.export.ExportedProgram, label: str) -> None:
    """After rebuilding: every node, in every subgraph, calls only allowed functions."""
    for module in program.graph_module.modules():
        graph = getattr(module, "graph", None)
        if not isinstance(graph, torch.fx.Graph):
            continue
        for node in graph.nodes:
            if node.op in ("placeholder", "output", "get_attr"):
                continue
            if node.op != "call_function" or not _allowed_call(node.target):
                raise _refuse(label, f"a {node.op} node calling {node.target!r}")
