"""Run a tape from its JSON export alone, to show that the export is enough.

``run_json(data, arrays)`` executes the dict that
``tapegraph.inspect.export.tape_to_dict`` made (or ``json.load`` read back)
on the caller's arrays, using nothing of tapegraph but the textbook numpy
rule of each op, looked up by name (``tapegraph.ops.lookup_op``) in ``tapegraph.reference.RULES``: no
``Program``, no ``Tape``, no kernels, no generated code. Everything else
comes from the JSON, and is followed to the letter:

- memory is the buffer plan: one array per ``buffers`` entry, and a value
  with destination ``slot`` is read back from its slot, which must still
  hold it (so a buffer reused too early gives a wrong answer, or an error
  here, not a silent match);
- feeds are read from the caller's arrays in place, or copied into their
  slot first, as ``in_place`` says; constants are written from their
  ``values``;
- each result goes where its ``destination`` says: its slot, a fresh
  array, the caller's array of a donated feed (which may then no longer be
  read as that feed), or a Python float;
- workspaces are allocated from their records (scratch uninitialised,
  fixed contents from the JSON) and checked against them; the reference
  rules need no scratch, so they are not passed on;
- results are handed back as their ``returned`` records say.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from tapegraph.ops import lookup_op
from tapegraph.reference import RULES

#: The only format this interpreter reads.
FORMAT = ("tapegraph-tape", 2)
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class JsonTapeError(AssertionError):
    """The JSON tape asked for something impossible (a clobbered slot, a read of a donated feed)."""


def decode_static(value: Any) -> Any:
    """A static attribute from JSON: lists back to tuples (axes, shapes)."""
    if isinstance(value, list):
        return tuple(decode_static(item) for item in value)
    return value


def decode_array(values: Any, shape: list[int], dtype: str) -> np.ndarray:
    """An array from nested JSON lists, non-finite floats written as strings."""
    def number(item: Any) -> Any:
        if isinstance(item, list):
            return [number(entry) for entry in item]
        return _NON_FINITE.get(item, item) if isinstance(item, str) else item
    array = np.array(number(values), dtype=dtype)
    if array.shape != tuple(shape):
        raise JsonTapeError(f"values of shape {array.shape} for an array declared {shape}")
    return array


class _Machine:
    """The state of one run: slots, fresh arrays, numbers, the caller's arrays."""

    def __init__(self, data: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        self.slots = {item["slot"]: np.empty(tuple(item["shape"]), dtype=item["dtype"]) for item in data["buffers"]}
        #: Which value each slot holds now.
        self.occupant: dict[int, int] = {}
        #: Where a value lives when not in a slot: a caller's array, a fresh array or a Python float.
        self.elsewhere: dict[int, Any] = {}
        self.caller = dict(arrays)
        self.feed_of_value = {feed["value"]: feed["name"] for feed in data["feeds"]}
        self.donated: set[str] = set()

    def read(self, slot: int, value: int) -> Any:
        feed = self.feed_of_value.get(value)
        if feed is not None and feed in self.donated:
            raise JsonTapeError(f"%{value} is feed {feed}, whose array a donated result has overwritten")
        if value in self.elsewhere:
            return self.elsewhere[value]
        if self.occupant.get(slot) != value:
            raise JsonTapeError(f"%{value} is read from s{slot}, which holds %{self.occupant.get(slot)}")
        return self.slots[slot]

    def write(self, item: Mapping[str, Any], result: np.ndarray) -> None:
        destination = item["destination"]
        kind, value = destination["kind"], item["value"]
        if kind == "slot":
            self.slots[item["output"]][...] = result
            self.occupant[item["output"]] = value
        elif kind == "fresh":
            self.elsewhere[value] = np.array(result)
        elif kind == "scalar":
            self.elsewhere[value] = float(result)
        elif kind == "donated":
            target = self.caller[destination["feed"]]
            np.copyto(target, result)
            self.donated.add(destination["feed"])
            self.elsewhere[value] = target
        else:
            raise JsonTapeError(f"instruction {item['index']} has unknown destination {kind!r}")


def run_json(data: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The results of the exported tape ``data`` on the feeds' ``arrays`` (by name)."""
    if (data["format"], data["version"]) != FORMAT:
        raise JsonTapeError(f"reads {FORMAT}, got {(data['format'], data['version'])}")
    if [item["index"] for item in data["instructions"]] != list(range(len(data["instructions"]))):
        raise JsonTapeError("the export lists only some sections; a tape runs only whole")
    machine = _Machine(data, arrays)
    for feed in data["feeds"]:
        array = arrays[feed["name"]]
        if array.shape != tuple(feed["shape"]) or array.dtype.name != feed["dtype"]:
            raise JsonTapeError(f"feed {feed['name']} is {feed['dtype']}{feed['shape']}, "
                                f"got {array.dtype.name}{list(array.shape)}")
        if feed["in_place"]:
            machine.elsewhere[feed["value"]] = array
        else:
            machine.slots[feed["slot"]][...] = array
            machine.occupant[feed["slot"]] = feed["value"]
    for constant in data["constants"]:
        if constant["fill"] is not None:
            array = np.full(tuple(constant["shape"]), _NON_FINITE.get(constant["fill"], constant["fill"]),
                            dtype=constant["dtype"])
        else:
            array = decode_array(constant["values"], constant["shape"], constant["dtype"])
        machine.slots[constant["slot"]][...] = array
        machine.occupant[constant["slot"]] = constant["value"]
        if constant["scalar"]:
            machine.elsewhere[constant["value"]] = float(array)
    for workspace in data["workspaces"]:
        if workspace["scratch"]:
            array = np.empty(tuple(workspace["shape"]), dtype=workspace["dtype"])
        else:
            array = decode_array(workspace["contents"], workspace["shape"], workspace["dtype"])
        if array.nbytes != workspace["bytes"]:
            raise JsonTapeError(f"workspace {workspace['name']} of instruction {workspace['instruction']} "
                                f"is {array.nbytes} bytes, the export says {workspace['bytes']}")

    for item in data["instructions"]:
        operands = []
        for slot, value, form in zip(item["inputs"], item["input_values"], item["operand_forms"], strict=True):
            operand = machine.read(slot, value)
            if form == "number":
                operand = float(operand)
            operands.append(np.asarray(operand))
        static = {key: decode_static(value) for key, value in item["static"].items()}
        result = np.asarray(RULES[lookup_op(item["op"])](*operands, **static), dtype=item["dtype"])
        if result.shape != tuple(item["shape"]):
            raise JsonTapeError(f"instruction {item['index']} ({item['op']}) gave shape {result.shape}, "
                                f"the export says {item['shape']}")
        machine.write(item, result)

    results = {}
    for entry in data["results"]:
        how = entry["returned"]
        current = machine.read(entry["slot"], entry["value"]) if how["kind"] != "donated" else None
        if how["kind"] == "raw":
            results[entry["name"]] = current
        elif how["kind"] == "float":
            results[entry["name"]] = float(current)
        elif how["kind"] == "new":
            results[entry["name"]] = np.array(current)
        elif how["kind"] == "donated":
            target = machine.caller[how["feed"]]
            value = machine.elsewhere.get(entry["value"])
            if value is not target:
                np.copyto(target, machine.read(entry["slot"], entry["value"]))
            machine.donated.add(how["feed"])
            results[entry["name"]] = target
        else:
            raise JsonTapeError(f"result {entry['name']} has unknown return {how['kind']!r}")
    return results
