"""Checks that make a serialized ``torch.export`` program safe to rebuild.

PyTorch's deserializer trusts its input: shape expressions are parsed with
``sympy.sympify`` (which evaluates text as Python) and a node's target may name
any attribute reachable from ``torch``, ``math`` or ``operator``. We accept only
what ``torch.export`` itself writes: expressions made of symbols, numbers,
arithmetic and a short list of sympy functions, and call targets that are
PyTorch operators or plain arithmetic.
"""

from __future__ import annotations

import io
import math
import operator
import re
import tokenize
from typing import Any

import torch

from merge_studio.errors import UnsafeCheckpointError

MAX_EXPRESSION_CHARS = 4096
MAX_POWERS = 3
MAX_EXPONENT = 64
MAX_NESTING = 400

_SYMBOL = re.compile(r"[a-z]{1,4}\d{1,9}\Z")
_QUOTED_SYMBOL = re.compile(r"""(['"])[a-z]{1,4}\d{1,9}\1\Z""")
_SYMPY_NAMES = frozenset({
    # sympy constructors, relations and functions that str(expr) prints
    "Symbol", "Integer", "Float", "Rational", "Max", "Min", "Mod", "Abs", "floor", "ceiling", "sqrt",
    "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "Piecewise", "ITE",
    "True", "False", "oo", "zoo", "nan",
    # Symbol(...) assumptions
    "integer", "positive", "nonnegative", "negative", "nonpositive", "real", "finite", "nonzero",
    "even", "odd", "zero", "infinite", "rational", "extended_real", "commutative",
    # torch.utils._sympy.functions, as named by the deserializer
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt",
    "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv",
    "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal",
    "ToFloat", "Identity",
})
_OPERATORS = frozenset({"(", ")", "+", "-", "*", "/", "//", "%", "**", ",", "=", "<", ">", "<=", ">=",
                        "==", "!=", "&", "|", "~"})
_SKIPPED_TOKENS = (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.INDENT, tokenize.DEDENT)

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
    """Allow only what ``str(sympy_expr)`` produces for shape expressions."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise _refuse(label, f"a {len(text)}-character shape expression")
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(text).readline)
                  if t.type not in _SKIPPED_TOKENS]
    except (tokenize.TokenError, SyntaxError, IndentationError) as exc:
        raise _refuse(label, f"an unreadable shape expression {text[:80]!r}") from exc
    powers = 0
    for i, tok in enumerate(tokens):
        bad = False
        if tok.type == tokenize.NAME:
            bad = tok.string not in _SYMPY_NAMES and not _SYMBOL.match(tok.string)
        elif tok.type == tokenize.NUMBER:
            bad = len(tok.string) > 40 or not re.fullmatch(r"\d+(\.\d*)?([eE][-+]?\d{1,3})?", tok.string)
        elif tok.type == tokenize.STRING:
            bad = not _QUOTED_SYMBOL.match(tok.string)
        elif tok.type == tokenize.OP:
            bad = tok.string not in _OPERATORS
            if tok.string == "**":
                powers += 1
                bad = bad or powers > MAX_POWERS or not _small_exponent(tokens, i + 1)
        else:
            bad = True
        if bad:
            raise _refuse(label, f"the shape expression {text[:80]!r} (at {tok.string[:20]!r})")


def _small_exponent(tokens: list[tokenize.TokenInfo], i: int) -> bool:
    """An exponent must be a symbol or a small integer, so no expression explodes."""
    if i < len(tokens) and tokens[i].string == "-":
        i += 1
    if i >= len(tokens):
        return False
    tok = tokens[i]
    if tok.type == tokenize.NAME:
        return bool(_SYMBOL.match(tok.string))
    return tok.type == tokenize.NUMBER and tok.string.isdigit() and int(tok.string) <= MAX_EXPONENT


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
