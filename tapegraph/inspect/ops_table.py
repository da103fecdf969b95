"""The table of every op, ``docs/ops.md``, generated from the registry.

Everything in it is read off the records: the call from the generated
function's signature, the maths from the first paragraph of the op's
docstring, the gradient convention from the docstring's sentences about
it and from the VJP rule itself (applied to the op's first sample: which
operands get a cotangent), the dtypes from the samples, and the Python
operators by applying each one to nodes and seeing which op it builds.
So the page cannot say something the registry does not; a test
(``tests/test_ops_table.py``) fails when the file differs from
``ops_table()``, and ``TAPEGRAPH_UPDATE_DOCS=1 python -m pytest
tests/test_ops_table.py`` rewrites it.
"""

from __future__ import annotations

import inspect
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tapegraph.expr import Node, const, input, param
from tapegraph.ops import COMPOSITES, REGISTRY, Composite, Op

#: The command that rewrites docs/ops.md.
REGENERATE = "TAPEGRAPH_UPDATE_DOCS=1 python -m pytest tests/test_ops_table.py"

#: Python syntax to try on nodes: its spelling in the table, and how to apply it.
_SYNTAX: tuple[tuple[str, Callable[[Node, Node], Any]], ...] = (
    ("a + b", operator.add), ("a - b", operator.sub), ("a * b", operator.mul), ("a / b", operator.truediv),
    ("a @ b", operator.matmul), ("a ** b", operator.pow), ("-a", lambda a, b: -a), ("abs(a)", lambda a, b: abs(a)),
    ("a < b", operator.lt), ("a <= b", operator.le), ("a > b", operator.gt), ("a >= b", operator.ge),
    ("a == b", operator.eq), ("a != b", operator.ne), ("a[key]", lambda a, b: a[0]), ("a.T", lambda a, b: a.T),
    ("a.astype(dtype)", lambda a, b: a.astype("float32")),
)

#: Sentences of a docstring that state the gradient convention.
_GRADIENT_WORDS = re.compile(r"d/d|\bVJP\b|gradient|cotangent|transpose of|derivative", re.I)


def _markdown(text: str) -> str:
    """Docstring text as one table cell: RST ``code`` as markdown `code`, no pipes or line breaks."""
    text = re.sub(r"``(.+?)``", r"`\1`", " ".join(text.split()))
    return text.replace("|", "\\|")


def _paragraphs(doc: str) -> list[str]:
    lines = inspect.cleandoc(doc or "").split("\n")
    paragraphs, current = [], []
    for line in lines:
        if line.startswith(">>>"):
            break  # the example
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return paragraphs


def _sentences(text: str) -> list[str]:
    # split after a full stop or semicolon followed by a space, outside code spans
    parts, depth, start = [], 0, 0
    for position, character in enumerate(text):
        if text.startswith("``", position):
            depth ^= 1
        if depth == 0 and character in ".;" and text[position + 1:position + 2] == " ":
            parts.append(text[start:position + 1].strip())
            start = position + 2
    parts.append(text[start:].strip())
    return [part for part in parts if part]


def maths(doc: str) -> str:
    """The first paragraph of a docstring (what the op computes)."""
    paragraphs = _paragraphs(doc)
    return _markdown(paragraphs[0]) if paragraphs else ""


def gradient_sentences(doc: str) -> str:
    """The docstring's sentences about the gradient (not the first paragraph when it is one sentence:
    that is the maths column already)."""
    paragraphs = _paragraphs(doc)
    sentences = [sentence for paragraph in paragraphs for sentence in _sentences(paragraph)
                 if sentence != paragraphs[0]]
    return _markdown(" ".join(sentence for sentence in sentences if _GRADIENT_WORDS.search(sentence)))


def _sample_nodes(op: Op | Composite) -> list[Node]:
    nodes = []
    for position, arg in enumerate(op.samples[0].args):
        if np.dtype(arg.dtype).kind == "f":
            nodes.append(param(f"a{position}", shape=arg.shape, dtype=arg.dtype))
        else:
            nodes.append(input(f"a{position}", shape=arg.shape, dtype=arg.dtype))
    return nodes


def gradient_flow(op: Op) -> str:
    """Which operands the VJP rule gives a cotangent, from its first sample."""
    nodes = _sample_nodes(op)
    node = op(*nodes, **op.samples[0].static)
    if node.op is not op:  # the sample was rewritten to a simpler node: no rule applied
        return ""
    flows = op.cotangents(const(np.ones(node.shape, dtype=node.dtype)), node)
    given = [name for name, flow in zip(op.operands, flows) if flow is not None]
    refused = [name for name, flow in zip(op.operands, flows) if flow is None]
    if not given:
        return "none (piecewise constant)"
    text = "to " + ", ".join(f"`{name}`" for name in given)
    return text + ("; none to " + ", ".join(f"`{name}`" for name in refused) if refused else "")


def dtypes(op: Op | Composite, operands: tuple[str, ...]) -> str:
    """The operands' dtype kinds, as the samples give them: float, or int (labels, indices)."""
    kinds: dict[str, set[str]] = {name: set() for name in operands}
    for sample in op.samples:
        for name, arg in zip(operands, sample.args):
            kinds[name].add("int" if np.dtype(arg.dtype).kind in "iu" else "float")
    return ", ".join(f"`{name}`: {' or '.join(sorted(kinds[name]))}" for name in operands)


def _call(function: Callable, prefix: str) -> str:
    """``tg.take(x, indices, axis=0)``: the signature without annotations or the ``name`` keyword."""
    signature = inspect.signature(function)
    parameters = [parameter.replace(annotation=inspect.Parameter.empty)
                  for parameter in signature.parameters.values() if parameter.name != "name"]
    plain = signature.replace(parameters=parameters, return_annotation=inspect.Signature.empty)
    return f"`{prefix}{function.__name__}{plain}`"


def syntax() -> dict[str, str]:
    """The op each piece of Python syntax builds on float nodes: ``{"a + b": "add", ...}``."""
    found = {}
    for spelling, apply in _SYNTAX:
        a, b = param("a", shape=(3,)), param("b", shape=(3,))
        try:
            result = apply(a, b)
        except (TypeError, ValueError):
            continue
        if isinstance(result, Node) and not result.is_leaf and result.op.name in REGISTRY:
            found[spelling] = result.op.name
    return found


def _composite_dtypes(composite: Composite) -> str:
    """As ``dtypes``; a function taking a sequence (``xs``) or ``*operands`` gets one entry for them all."""
    parameters = list(inspect.signature(composite.build).parameters.values())
    names = [parameter.name for parameter in parameters if parameter.default is inspect.Parameter.empty
             and parameter.kind is not parameter.VAR_POSITIONAL]
    variadic = [parameter.name for parameter in parameters if parameter.kind is parameter.VAR_POSITIONAL]
    if variadic or composite.call is not None and len(names) == 1:
        together = f"*{variadic[0]}" if variadic else names[0]
        kinds = {"int" if np.dtype(arg.dtype).kind in "iu" else "float"
                 for sample in composite.samples for arg in sample.args}
        return f"`{together}`: {' or '.join(sorted(kinds))}"
    return dtypes(composite, tuple(names[:len(composite.samples[0].args)]))


def ops_table(registry: Mapping[str, Op] | None = None, composites: Mapping[str, Composite] | None = None) -> str:
    """The markdown of ``docs/ops.md``: every primitive and composite, and the Python syntax on nodes."""
    registry = REGISTRY if registry is None else registry
    composites = COMPOSITES if composites is None else composites
    by_op: dict[str, list[str]] = {}
    for spelling, name in syntax().items():
        by_op.setdefault(name, []).append(f"`{spelling}`")
    lines = [
        "# Ops",
        "",
        "<!-- Generated from the op registry by tapegraph.inspect.ops_table; do not edit by hand.",
        f"     Regenerate with: {REGENERATE} -->",
        "",
        "Every op tapegraph has, as its registry declares it. *Primitives* are one record each",
        "(`tapegraph/ops/`): a shape rule, a kernel, a VJP rule and samples, which the test suite",
        "checks against central differences to first and second order, against a reference",
        "interpreter, and in generated code. *Composites* are functions of primitives, so their",
        "gradients come from the primitives' rules. Public ones are `tg.<name>`; internal ones",
        "(the VJP rules' helpers) are in `tapegraph.ops`. An operand listed as `int` is integer",
        "data (labels, indices) and gets no gradient; a `float` operand may be float32 or float64",
        "(operands of two float dtypes meet through a `cast`). The gradient column quotes the",
        "docstring, and says which operands the VJP rule gives a cotangent.",
        "",
        "## Python syntax on nodes",
        "",
        "| syntax | op |",
        "| --- | --- |",
    ]
    for spelling, name in syntax().items():
        lines.append(f"| `{spelling}` | `{name}` |")
    lines += ["", "## Primitives", "", "| op | call | maths | gradient | dtypes |", "| --- | --- | --- | --- | --- |"]
    for name in sorted(registry):
        op = registry[name]
        call = _call(op.function, "tg." if op.public else "tg.ops.")
        if name in by_op:
            call += " or " + " or ".join(by_op[name])
        convention = " ".join(part for part in (gradient_flow(op) + ".", gradient_sentences(op.doc)) if part and part != ".")
        lines.append(f"| `{name}` | {call} | {maths(op.doc)} | {convention} | {dtypes(op, op.operands)} |")
    lines += ["", "## Composites", "", "| function | call | maths | dtypes |", "| --- | --- | --- | --- |"]
    for name in sorted(composites):
        composite = composites[name]
        doc = composite.build.__doc__ or ""
        call = _call(composite.build, "tg.")
        lines.append(f"| `{name}` | {call.replace('|', chr(92) + '|')} | {maths(doc)} | {_composite_dtypes(composite)} |")
    return "\n".join(lines) + "\n"
