"""What a .pt2 program may contain: torch.export's own expressions and operators, nothing else."""

from __future__ import annotations

import pytest

from merge_studio.core.checkpoints.program_checks import check_expression, check_target
from merge_studio.errors import UnsafeCheckpointError

WRITTEN_BY_TORCH_EXPORT = [
    "Symbol('s77', positive=True, integer=True)",
    "Add(FloorDiv(Mul(Symbol('s27', positive=True, integer=True), Symbol('s77', positive=True, "
    "integer=True)), Integer(2)), Integer(1))",
    "FloatPow(ToFloat(Symbol('s27', positive=True, integer=True)), Float('0.5', precision=53))",
    "Pow(Symbol('s0', integer=True), Integer(-1))",
    "Max(Integer(1), Symbol('u0', integer=True))",
    "StrictLessThan(Symbol('s0', integer=True), int_oo)",
    "s0*4 + 2",
    "s0**2",
]


@pytest.mark.parametrize("text", WRITTEN_BY_TORCH_EXPORT)
def test_expressions_torch_export_writes_are_accepted(text: str) -> None:
    check_expression(text, "m.pt2")


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('touch x')",
        "Symbol('s0').__class__",
        "lambdify(s0, s0)",
        "preview(s0)",
        "Symbol(\"s0; import os\")",
        "[c for c in ()]",
        "Integer(2)**Integer(10000000000)",
        "Pow(Integer(2), Integer(99999999999))",
        "LShift(Integer(1), Integer(10000000000))",
        "Pow(Pow(Pow(Pow(Integer(9), 64), 64), 64), 64)",
        "Integer(" + "9" * 40 + ")",
        "Float('1e999999')",
        "Symbol('s0', **{'x': 1})",
    ],
)
def test_code_and_explosive_expressions_are_refused(text: str) -> None:
    with pytest.raises(UnsafeCheckpointError, match="m.pt2: the program contains the shape expression"):
        check_expression(text, "m.pt2")


@pytest.mark.parametrize("target", ["torch.ops.aten.linear.default", "torch.ops.higher_order.cond",
                                    "_operator.getitem", "math.sqrt", "torch.sym_float", "torch._sym_sqrt",
                                    "#custom:op"])
def test_operator_targets_are_accepted(target: str) -> None:
    check_target(target, "m.pt2")


@pytest.mark.parametrize("target", ["torch.load", "torch.hub.load", "os.system", "torch.ops.load_library.x",
                                    "torch.ops.aten.__getattr__", "builtins.eval", 42])
def test_other_targets_are_refused(target: object) -> None:
    with pytest.raises(UnsafeCheckpointError, match="m.pt2: the program contains a call to"):
        check_target(target, "m.pt2")
