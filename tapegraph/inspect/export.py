"""A tape as JSON-able data, with a JSON Schema that pins its layout.

``tape_to_dict`` turns a ``Tape`` into plain dicts, lists, strings and
numbers (``json.dumps`` writes it as is), for tools that read tapes
without importing tapegraph: viewers, diffing, code generators.
``TAPE_SCHEMA`` describes that layout exactly (JSON Schema, draft
2020-12, ``additionalProperties: false`` everywhere), so a change to the
layout is a change to the schema, and ``docs/cli.md`` prints both.

Everything is listed in tape order and keyed deterministically, so the
same tape gives the same JSON, byte for byte.

>>> import json
>>> import tapegraph as tg
>>> w = tg.param("w", shape=(2,))
>>> data = tape_to_dict(tg.compile(tg.sum(tg.square(w)), wrt=[w]).tape())
>>> data["format"], data["version"], [item["op"] for item in data["instructions"]]
('tapegraph-tape', 2, ['square', 'sum', 'mul'])
>>> json.loads(json.dumps(data)) == data
True
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tapegraph.compile.tape import DESTINATIONS, OPERAND_FORMS, RETURN_KINDS, SECTIONS, Tape, Workspace

#: The ``format`` field of every exported tape.
FORMAT_NAME = "tapegraph-tape"
#: Raised whenever a field is added, removed or changes meaning.
FORMAT_VERSION = 2
#: How non-finite floats are written (JSON has no NaN or infinity).
NON_FINITE = ("nan", "inf", "-inf")


def tape_to_dict(tape: Tape, title: str = "", sections: Sequence[str] | None = None) -> dict[str, Any]:
    """The tape as JSON-able data, laid out as ``TAPE_SCHEMA`` describes.

    ``title`` says what the tape computes (as the first line of a text
    dump). ``sections`` keeps only the instructions of those sections
    (say ``["forward"]``); feeds, constants, results and buffers always
    describe the whole tape, and the ``sections`` field of the result says
    which instructions are listed.

    >>> import tapegraph as tg
    >>> x = tg.input("x", shape=("batch", 3))
    >>> tape = tg.compile(tg.mean(tg.tanh(x))).tape("run", sizes={"batch": 2})
    >>> data = tape_to_dict(tape, sections=["forward"])
    >>> data["sizes"], data["sections"], data["instructions"][1]["static"]
    ({'batch': 2}, ['forward'], {'axis': [0, 1], 'keepdims': False})
    """
    present = [section for section in SECTIONS if tape.section(section)]
    if sections is None:
        listed = present
    else:
        unknown = [section for section in sections if section not in SECTIONS]
        if unknown:
            raise ValueError(f"sections must be among {list(SECTIONS)}, got {list(sections)}")
        listed = [section for section in SECTIONS if section in sections]
    workspaces = [_workspace(workspace) for workspace in tape.workspaces]
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "title": title,
        "sizes": {name: int(size) for name, size in sorted(tape.sizes.items())},
        "sections": listed,
        "feeds": [
            {"name": feed.name, "kind": feed.kind, "slot": feed.slot, "value": feed.value,
             "shape": _shape(feed.shape), "dtype": feed.dtype, "in_place": feed.in_place}
            for feed in tape.feeds
        ],
        "constants": [_constant(constant.slot, constant.value, constant.array, constant.label, constant.scalar)
                      for constant in tape.constants],
        "instructions": [
            {"index": index, "section": instruction.section, "op": instruction.op.name,
             "inputs": list(instruction.inputs), "input_values": list(instruction.input_values),
             "output": instruction.output, "value": instruction.value,
             "static": {key: json_value(value) for key, value in instruction.static},
             "derived": {key: json_value(value) for key, value in instruction.derived},
             "shape": _shape(instruction.shape), "dtype": instruction.dtype, "label": instruction.label,
             "destination": {"kind": instruction.destination.kind, "feed": instruction.destination.feed},
             "operand_forms": [instruction.form(index) for index in range(len(instruction.inputs))]}
            for index, instruction in enumerate(tape.instructions) if instruction.section in listed
        ],
        "results": [{"name": name, "slot": slot, "value": value,
                     "returned": {"kind": tape.returns[name].kind, "feed": tape.returns[name].feed}}
                    for name, (slot, value) in tape.results.items()],
        "buffers": [
            {"slot": buffer.slot, "shape": _shape(buffer.shape), "dtype": buffer.dtype, "bytes": buffer.nbytes,
             "values": list(buffer.values)}
            for buffer in tape.buffers
        ],
        "workspaces": workspaces,
        "workspace_bytes": sum(item["bytes"] for item in workspaces),
        "total_bytes": tape.total_bytes,
    }


def dumps(data: dict[str, Any]) -> str:
    """JSON text of ``tape_to_dict``'s result: one top-level field, and one list item, per line.

    Any JSON reader reads it; people and ``diff`` see one feed,
    instruction or buffer per line. Strict JSON (no NaN tokens).

    >>> print(dumps({"format": "tapegraph-tape", "feeds": [{"name": "w"}, {"name": "x"}], "sizes": {}}))
    {
      "format": "tapegraph-tape",
      "feeds": [
        {"name": "w"},
        {"name": "x"}
      ],
      "sizes": {}
    }
    """
    lines = []
    for position, (key, value) in enumerate(data.items()):
        comma = "," if position < len(data) - 1 else ""
        if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            items = [f"    {_compact(item)}" for item in value]
            lines.append(f"  {json.dumps(key)}: [\n" + ",\n".join(items) + f"\n  ]{comma}")
        else:
            lines.append(f"  {json.dumps(key)}: {_compact(value)}{comma}")
    return "{\n" + "\n".join(lines) + "\n}"


def _compact(value: Any) -> str:
    return json.dumps(value, allow_nan=False, separators=(", ", ": "))


def json_value(value: Any) -> Any:
    """A static attribute or array entry as JSON data.

    Tuples become lists, numpy scalars Python numbers, non-finite floats the
    strings ``"nan"``, ``"inf"``, ``"-inf"``; anything else that JSON cannot
    hold becomes its text.

    >>> json_value((0, np.int64(1), float("inf"), None, True))
    [0, 1, 'inf', None, True]
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.ndarray):
        return json_value(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if math.isnan(number):
            return "nan"
        if math.isinf(number):
            return "inf" if number > 0 else "-inf"
        return number
    if isinstance(value, (tuple, list)):
        return [json_value(item) for item in value]
    return str(value)


def _shape(shape: Sequence[int]) -> list[int]:
    return [int(dim) for dim in shape]


def _constant(slot: int, value: int, array: np.ndarray, label: str, scalar: bool) -> dict[str, Any]:
    fill = _fill_of(array)
    return {
        "slot": slot, "value": value, "label": label, "shape": _shape(array.shape), "dtype": array.dtype.name,
        "scalar": scalar, "fill": None if fill is None else json_value(fill),
        "values": json_value(array) if fill is None else None,
        "min": json_value(array.min()) if array.size else None,
        "max": json_value(array.max()) if array.size else None,
    }


def _fill_of(array: np.ndarray) -> Any:
    """The one number every entry of ``array`` holds (more than one entry), else None.

    A constant of one number broadcast (the gradient of a sum of a large
    parameter) is written as that number: as nested lists it would be the
    whole array, 9 million numbers for a 3000 x 3000 parameter.
    """
    if array.size < 2:
        return None
    if not any(array.strides):  # a broadcast view: every entry is one number's memory
        return array.flat[0]
    first = array.flat[0]
    return first if bool((array == first).all()) else None


def _workspace(workspace: Workspace) -> dict[str, Any]:
    fixed = workspace.contents is not None
    return {"instruction": workspace.instruction, "name": workspace.name, "shape": _shape(workspace.shape),
            "dtype": workspace.dtype, "bytes": workspace.nbytes, "scratch": not fixed,
            "contents": json_value(workspace.contents) if fixed else None}


# The schema. Small helpers keep each field's description next to its type.

def _object(description: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "description": description, "properties": properties,
            "required": list(properties), "additionalProperties": False}


def _list(description: str, items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "description": description, "items": items}


def _integer(description: str, minimum: int = 0) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "description": description}


def _text(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def _ref(name: str, description: str) -> dict[str, Any]:
    return {"$ref": f"#/$defs/{name}", "description": description}


_SHAPE = "concrete shape, one size per axis ([] for a single value)"
_DTYPE = "numpy dtype name, such as float64 or int64"

#: JSON Schema (draft 2020-12) of ``tape_to_dict``'s result.
TAPE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "tapegraph tape",
    **_object(
        "One specialised tape of a tapegraph program: feeds, constants, instructions over numbered buffer "
        "slots, results and the buffer plan (docs/tape.md explains the text form of the same data).",
        {
            "format": {"const": FORMAT_NAME, "description": "always 'tapegraph-tape'"},
            "version": {"const": FORMAT_VERSION, "description": "layout version; raised on any change to this schema"},
            "title": _text("what the tape computes, as the first line of the text dump ('' if none was given)"),
            "sizes": {"type": "object", "description": "size of each symbolic dimension, by name, sorted by name",
                      "additionalProperties": {"type": "integer", "minimum": 0}},
            "sections": _list("sections whose instructions are listed, in tape order",
                              {"enum": list(SECTIONS)}),
            "feeds": _list("slots filled from the caller's arrays at every call", _object("one feed", {
                "name": _text("the parameter's or input's name"),
                "kind": {"enum": ["param", "input", "hyper"],
                         "description": "param (gradients are taken with respect to it), input (data) or hyper "
                                        "(an optimizer's hyperparameter: a float64 scalar)"},
                "slot": _integer("buffer slot the feed occupies in the plan"),
                "value": _integer("value number (%n in the dump)"),
                "shape": _ref("shape", _SHAPE),
                "dtype": _text(_DTYPE),
                "in_place": {"type": "boolean", "description": "true: instructions read the caller's array itself "
                                                               "(never written unless a result is donated into "
                                                               "it); false: it is first copied into its slot"},
            })),
            "constants": _list("slots written once, when the tape is bound (declared and folded constants)",
                               _object("one constant", {
                                   "slot": _integer("buffer slot"),
                                   "value": _integer("value number"),
                                   "label": _text("where it came from: a name, or op and source line"),
                                   "shape": _ref("shape", _SHAPE),
                                   "dtype": _text(_DTYPE),
                                   "scalar": {"type": "boolean",
                                              "description": "also held as a Python float literal (a single "
                                                             "float64), used where an operand may be a number"},
                                   "fill": {"description": "the one number every entry holds, for a "
                                                           "constant of more than one entry that is all one "
                                                           "number (then values is null)",
                                            "anyOf": [{"type": "null"}, {"$ref": "#/$defs/scalar"}]},
                                   "values": {"description": "the entries as nested lists (a number for shape "
                                                             "[]), or null where fill gives them",
                                              "anyOf": [{"type": "null"}, {"$ref": "#/$defs/nested"}]},
                                   "min": {"description": "smallest entry (null if empty)",
                                           "anyOf": [{"type": "null"}, {"$ref": "#/$defs/scalar"}]},
                                   "max": {"description": "largest entry (null if empty)",
                                           "anyOf": [{"type": "null"}, {"$ref": "#/$defs/scalar"}]},
                               })),
            "instructions": _list("out = op(*inputs, **static), in execution order", _object("one instruction", {
                "index": _integer("position in the whole tape (the dump's first column)"),
                "section": {"enum": list(SECTIONS), "description": "forward, reverse (gradients) or update (SGD)"},
                "op": _text("registered op name (built-in or declared with tg.register_op: tapegraph.ops.lookup_op)"),
                "inputs": _list("slots read, in operand order", {"type": "integer", "minimum": 0}),
                "input_values": _list("value number held by each slot read", {"type": "integer", "minimum": 0}),
                "output": _integer("slot written"),
                "value": _integer("value number of the result"),
                "static": {"type": "object", "description": "the op's static attributes by name, symbolic sizes "
                                                            "filled in; tuples as lists",
                           "additionalProperties": {"$ref": "#/$defs/static"}},
                "derived": {"type": "object", "description": "further attributes the kernel gets, derived once "
                                                             "from the concrete shapes (reduction axes, scale "
                                                             "factors); tuples as lists",
                            "additionalProperties": {"$ref": "#/$defs/static"}},
                "shape": _ref("shape", "concrete shape of the result"),
                "dtype": _text("dtype of the result"),
                "label": _text("where the value came from: the user's name, or op and source line; gradient "
                               "instructions say 'grad of ...'"),
                "destination": _object("where the result is written", {
                    "kind": {"enum": list(DESTINATIONS),
                             "description": "slot (the planned buffer 'output'), fresh (a new array, returned new), "
                                            "donated (the caller's array for feed 'feed') or scalar (a Python "
                                            "float, no array)"},
                    "feed": {"description": "the donated feed's name (null unless donated)",
                             "anyOf": [{"type": "null"}, {"type": "string"}]},
                }),
                "operand_forms": _list("how each input is taken, in operand order: number (a Python float), array, "
                                       "or either (whichever form the value has)", {"enum": list(OPERAND_FORMS)}),
            })),
            "results": _list("where each result is when the tape ends, in the order a call returns them",
                             _object("one result", {
                                 "name": _text("'objective', 'grad <param>', an output's name or 'new <param>'"),
                                 "slot": _integer("slot holding it"),
                                 "value": _integer("its value number"),
                                 "returned": _object("how a call hands it back", {
                                     "kind": {"enum": list(RETURN_KINDS),
                                              "description": "raw (as computed), float (a Python float), new (an "
                                                             "array the caller owns) or donated (in the caller's "
                                                             "array for feed 'feed', which is returned)"},
                                     "feed": {"description": "the feed whose array receives it (null unless donated)",
                                              "anyOf": [{"type": "null"}, {"type": "string"}]},
                                 }),
                             })),
            "buffers": _list("the buffer plan: one preallocated array per slot, in slot order", _object("one buffer", {
                "slot": _integer("slot number"),
                "shape": _ref("shape", _SHAPE),
                "dtype": _text(_DTYPE),
                "bytes": _integer("size of the array in bytes"),
                "values": _list("value numbers that take turns in this slot, in tape order",
                                {"type": "integer", "minimum": 0}),
            })),
            "workspaces": _list("every instruction's workspace arrays (passed to its kernel by name), in tape order",
                                _object("one workspace array", {
                                    "instruction": _integer("index of the instruction that uses it"),
                                    "name": _text("the kernel's keyword for it"),
                                    "shape": _ref("shape", _SHAPE),
                                    "dtype": _text(_DTYPE),
                                    "bytes": _integer("size in bytes"),
                                    "scratch": {"type": "boolean",
                                                "description": "true: allocated uninitialised (the kernel writes "
                                                               "it before reading); false: fixed contents"},
                                    "contents": {"description": "the fixed contents as nested lists (null for "
                                                                "scratch)",
                                                 "anyOf": [{"type": "null"}, {"$ref": "#/$defs/nested"}]},
                                })),
            "workspace_bytes": _integer("bytes of all workspace arrays"),
            "total_bytes": _integer("bytes of all buffers and workspace arrays: the tape's memory"),
        },
    ),
    "$defs": {
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "scalar": {"description": f"a number, a boolean, or one of {list(NON_FINITE)} for non-finite floats",
                   "anyOf": [{"type": ["number", "boolean"]}, {"enum": list(NON_FINITE)}]},
        "nested": {"anyOf": [{"$ref": "#/$defs/scalar"}, {"type": "array", "items": {"$ref": "#/$defs/nested"}}]},
        "static": {"description": "null, a boolean, a number, a string, or a list of these",
                   "anyOf": [{"type": ["null", "boolean", "number", "string"]},
                             {"type": "array", "items": {"$ref": "#/$defs/static"}}]},
    },
}


def schema_fields(schema: dict[str, Any] | None = None) -> list[tuple[str, str, str]]:
    """``(path, type, description)`` of every field in a schema, depth first, as docs/cli.md lists them.

    Paths read as in the data: ``feeds[].name`` is the ``name`` of each
    item of the ``feeds`` list.

    >>> schema_fields()[:2]
    [('format', '"tapegraph-tape"', "always 'tapegraph-tape'"), ('version', '2', 'layout version; raised on any change to this schema')]
    """
    schema = TAPE_SCHEMA if schema is None else schema
    rows: list[tuple[str, str, str]] = []

    def visit(node: dict[str, Any], prefix: str) -> None:
        for name, field in node["properties"].items():
            path = prefix + name
            items = field.get("items", {})
            rows.append((path, _type_name(field), field.get("description", "")))
            if field.get("type") == "object" and "properties" in field:
                visit(field, path + ".")
            elif field.get("type") == "array" and "properties" in items:
                visit(items, path + "[].")

    visit(schema, "")
    return rows


def _type_name(field: dict[str, Any]) -> str:
    """A short type for a field: ``int``, ``[int]``, ``"forward" | "reverse"``, ``{name: int}``."""
    if "const" in field:
        return json.dumps(field["const"])
    if "enum" in field:
        return " | ".join(json.dumps(item) for item in field["enum"])
    if "$ref" in field:
        return {"shape": "[int]", "scalar": "number", "nested": "number or nested lists",
                "static": "static value"}[field["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in field:
        return " or ".join("null" if option.get("type") == "null" else _type_name(option) for option in field["anyOf"])
    kind = field.get("type")
    if kind == "array":
        items = field["items"]
        return "[object]" if "properties" in items else f"[{_type_name(items)}]"
    if kind == "object":
        if "properties" in field:
            return "object"
        return "{name: " + _type_name(field["additionalProperties"]) + "}"
    return {"integer": "int", "string": "string", "number": "number", "boolean": "bool"}.get(kind, str(kind))
