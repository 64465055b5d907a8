"""`calculator`: arithmetic from a parsed expression tree — never `eval`."""

from __future__ import annotations

import ast
import math
import operator
from typing import Any

from tools.base import ToolError
from tools.decorator import tool

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {name: getattr(math, name) for name in (
    "sqrt", "exp", "log", "log2", "log10", "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh",
    "tanh", "degrees", "radians", "floor", "ceil", "factorial", "gcd", "lcm", "hypot", "comb", "perm")}
_FUNCTIONS |= {"abs": abs, "round": round, "min": min, "max": max}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau, "inf": math.inf}
# Big enough for any real calculation, small enough that 9**9**9 cannot stall the server.
_MAX_MAGNITUDE = 10**300
_MAX_EXPONENT = 10_000
_MAX_FACTORIAL = 1_000


def evaluate(expression: str) -> int | float:
    """Evaluate `expression`; raise ToolError naming what is not allowed."""
    try:
        tree = ast.parse(expression.replace("^", "**").replace("×", "*").replace("÷", "/"), mode="eval")
    except SyntaxError as error:
        raise ToolError(f"cannot parse {expression!r}: {error.msg}") from None
    return _eval(tree.body)


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
            raise ToolError(f"exponent {right} is too large (limit {_MAX_EXPONENT})")
        try:
            return _checked(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise ToolError("division by zero") from None
        except OverflowError:
            raise ToolError("the result is too large") from None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS and not node.keywords:
        args = [_eval(arg) for arg in node.args]
        if node.func.id == "factorial" and args and args[0] > _MAX_FACTORIAL:
            raise ToolError(f"factorial of {args[0]} is too large (limit {_MAX_FACTORIAL})")
        try:
            return _checked(_FUNCTIONS[node.func.id](*args))
        except (ValueError, TypeError, OverflowError) as error:
            raise ToolError(f"{node.func.id}{tuple(args)}: {error}") from None
    if isinstance(node, ast.Name):
        raise ToolError(f"unknown name {node.id!r}; known: {', '.join(sorted(_FUNCTIONS | _CONSTANTS))}")
    raise ToolError(f"{ast.unparse(node)!r} is not arithmetic")


def _checked(value: Any) -> Any:
    if isinstance(value, complex):
        raise ToolError("the result is not a real number")
    if isinstance(value, int) and abs(value) > _MAX_MAGNITUDE:
        raise ToolError("the result is too large")
    return value


@tool(timeout=5)
def calculator(expression: str) -> float | int:
    """Evaluate an arithmetic expression exactly, e.g. `(3 + 4) * 2`, `2^10`, `sqrt(2) / 3`, `17 % 5`.

    Supports + - * / // % and ** (or ^), parentheses, pi, e, and the functions sqrt, exp, log, log2,
    log10, sin, cos, tan, asin, acos, atan, floor, ceil, round, abs, min, max, factorial, gcd, comb.

    Args:
        expression: the arithmetic expression to evaluate.
    """
    result = evaluate(expression)
    if isinstance(result, float) and result.is_integer() and abs(result) < 2**53:
        return int(result)
    return result
