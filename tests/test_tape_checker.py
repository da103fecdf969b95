"""The tape checker refuses every kind of broken tape: one test per kind.

Each test takes a tape the compiler emitted (which passes), breaks one
thing with ``attrs.evolve``, and expects ``TapeCheckError`` with a message
naming what is wrong.
"""

from __future__ import annotations

import attrs
import numpy as np
import pytest

import tapegraph as tg
from tapegraph.compile.tape import Destination, Returned, TapeCheckError, Workspace, check_tape

import homework_graphs as hw


def _multiclass_tape(donate: bool = False):
    program = hw.multiclass(num_inputs=2, num_hidden=3, batch=True)
    return tg.sgd(program, 0.1, donate=donate).tape(sizes={"batch": 4})


def _with(tape, position: int, **changes):
    instructions = list(tape.instructions)
    instructions[position] = attrs.evolve(instructions[position], **changes)
    return attrs.evolve(tape, instructions=tuple(instructions))


def _position(tape, predicate) -> int:
    return next(index for index, instruction in enumerate(tape.instructions) if predicate(instruction))


def _refused(tape, match: str) -> None:
    with pytest.raises(TapeCheckError, match=match):
        check_tape(tape)


def test_emitted_tapes_pass():
    for donate in (False, True):
        check_tape(_multiclass_tape(donate))
    check_tape(hw.ridge(num_features=3).tape())


# Output slots.

def test_an_elementwise_op_may_write_over_its_own_input():
    tape = hw.ridge(num_features=3).tape()
    position = _position(tape, lambda instruction: instruction.output in instruction.inputs)
    assert tape.instructions[position].op.elementwise
    check_tape(tape)


def test_a_non_elementwise_op_may_not_write_over_its_own_input():
    x = tg.param("x", shape=(3, 3))
    program = tg.compile(tg.sum(tg.matmul(tg.tanh(x), tg.exp(x))), wrt=[x])
    tape = program.tape()
    position = _position(tape, lambda instruction: instruction.op.name == "matmul")
    matmul = tape.instructions[position]
    _refused(_with(tape, position, output=matmul.inputs[0]), r"writes s\d+, one of its own inputs, but matmul is not elementwise")


# Workspaces.

def _picking_tape():
    """A tape whose log_softmax has two scratch workspaces and whose pick has fixed row offsets and scratch."""
    scores = tg.input("z", shape=("batch", 3)) + tg.param("b", shape=(3,))
    labels = tg.input("y", shape=("batch",), dtype="int64")
    program = tg.compile(tg.sum(tg.ops.pick(tg.log_softmax(scores), labels)), wrt=[scores.inputs[1]])
    return program.tape(sizes={"batch": 4})


def _op_position(tape, name: str) -> int:
    return _position(tape, lambda instruction: instruction.op.name == name)


def _replace_workspace(tape, name: str, position: int, **changes):
    workspaces = tuple(attrs.evolve(workspace, **changes)
                       if (workspace.instruction, workspace.name) == (position, name) else workspace
                       for workspace in tape.workspaces)
    return attrs.evolve(tape, workspaces=workspaces)


def test_a_missing_workspace_is_refused():
    tape = _picking_tape()
    check_tape(tape)
    position = _op_position(tape, "log_softmax")
    kept = tuple(workspace for workspace in tape.workspaces
                 if (workspace.instruction, workspace.name) != (position, "row"))
    _refused(attrs.evolve(tape, workspaces=kept), r"has workspaces \['count', 'full', 'mask'\], but log_softmax needs")


def test_a_workspace_of_the_wrong_shape_or_dtype_is_refused():
    tape = _picking_tape()
    _refused(_replace_workspace(tape, "full", _op_position(tape, "log_softmax"), shape=(4, 2)),
             r"workspace full is f64\[4,2\], but log_softmax needs f64\[4,3\]")
    _refused(_replace_workspace(tape, "flat", _op_position(tape, "pick"), dtype="int32"), "workspace flat is i32\\[4\\]")


def test_fixed_workspace_contents_must_be_present_and_right():
    tape = _picking_tape()
    position = _op_position(tape, "pick")
    _refused(_replace_workspace(tape, "rows", position, contents=None), "workspace rows holds fixed data .* gives no contents")
    _refused(_replace_workspace(tape, "rows", position, contents=np.zeros(4, dtype=np.int64)),
             "workspace rows has contents other than the fixed data")


def test_scratch_workspaces_carry_no_contents():
    tape = _picking_tape()
    _refused(_replace_workspace(tape, "flat", _op_position(tape, "pick"), contents=np.zeros(4, dtype=np.int64)),
             "workspace flat is scratch, but the tape gives it contents")


def test_a_workspace_of_an_op_that_takes_none_or_of_no_instruction_is_refused():
    tape = _multiclass_tape()
    extra = Workspace(0, "spare", (2,), "float64")
    _refused(attrs.evolve(tape, workspaces=tape.workspaces + (extra,)), r"has workspaces \['spare'\], but matmul takes none")
    stray = Workspace(len(tape.instructions), "spare", (2,), "float64")
    count = len(tape.instructions)
    _refused(attrs.evolve(tape, workspaces=tape.workspaces + (stray,)),
             f"belongs to instruction {count}, but the tape has {count} instructions")


# Destinations.

def test_only_a_single_float64_of_an_op_with_a_scalar_form_is_held_as_a_number():
    tape = _multiclass_tape()
    position = _op_position(tape, "cross_entropy")
    _refused(_with(tape, position, destination=Destination("scalar")), r"is held as a number, but it is f64\[4\]")


def test_a_number_operand_must_be_a_single_float64():
    tape = _multiclass_tape()
    position = _op_position(tape, "cross_entropy")
    _refused(_with(tape, position, operand_forms=("array", "number")), r"takes operand 1 \(%10, i64\[4\]\) as a number")


def test_a_kernel_takes_a_number_only_for_an_operand_its_op_declares():
    # the per-example step: the step size reaches softmax_minus_onehot as a
    # number (its op declares numbers=("scale",)), and nothing multiplies
    # the residual by it afterwards
    program = hw.multiclass(num_inputs=2, num_hidden=3)
    tape = tg.sgd(program, 0.1).tape()
    position = _op_position(tape, "softmax_minus_onehot")
    residual = tape.instructions[position]
    assert residual.operand_forms == ("array", "array", "number")
    assert not any(instruction.op.name == "mul" and residual.value in instruction.input_values
                   for instruction in tape.instructions)
    check_tape(tape)
    # the same instruction from an op whose kernel takes no numbers is refused
    undeclared = attrs.evolve(residual.op, numbers=())
    _refused(_with(tape, position, op=undeclared), r"passes operand 2 \(%\d+\) to its kernel as a number, but op "
                                                   r"softmax_minus_onehot takes numbers only for \[\]")


def test_a_fresh_array_must_be_a_result_returned_new():
    tape = _multiclass_tape()
    _refused(_with(tape, 0, destination=Destination("fresh")), "writes a fresh array, which must be returned new exactly once")


def test_a_donated_write_must_be_a_result_donated_into_that_feed():
    tape = _multiclass_tape(donate=True)
    position = _position(tape, lambda instruction: instruction.destination.kind == "donated")
    _refused(_with(tape, position, destination=Destination("donated", "x")),
             "writes into the caller's array for feed x, but no result computed here is returned donated into it")
    _refused(_with(tape, position, destination=Destination("donated", "nowhere")), "feed 'nowhere', which the tape does not have")


def test_a_donated_write_must_come_after_every_read_of_its_feed():
    tape = _multiclass_tape(donate=True)
    # return W1's gradient, written into the caller's W1, which the update reads afterwards
    gradient = _position(tape, lambda instruction: instruction.label.startswith("matmul at grad")
                         and instruction.shape == (3, 2))
    update = _position(tape, lambda instruction: instruction.destination == Destination("donated", "W1"))
    assert gradient < update
    broken = _with(_with(tape, update, destination=Destination("slot")), gradient,
                   destination=Destination("donated", "W1"))
    results = {**broken.results, "new W1": (tape.instructions[gradient].output, tape.instructions[gradient].value)}
    _refused(attrs.evolve(broken, results=results),
             f"instruction {update} .* reads feed W1 after instruction {gradient} wrote a result into the caller's array for it")


def test_a_feed_not_read_in_place_cannot_be_donated_into():
    tape = _multiclass_tape(donate=True)
    feeds = tuple(attrs.evolve(feed, in_place=False) if feed.name == "b1" else feed for feed in tape.feeds)
    _refused(attrs.evolve(tape, feeds=feeds), "feed b1, which is not read in place")


def test_unknown_destination_kinds_are_refused():
    tape = _multiclass_tape()
    _refused(_with(tape, 0, destination=Destination("elsewhere")), "has destination 'elsewhere'")
    _refused(_with(tape, 0, destination=Destination("slot", "W1")), "a donated destination names its feed, and only a donated one")


# Returns.

def test_every_result_has_one_way_back():
    tape = _multiclass_tape()
    returns = dict(tape.returns)
    returns.pop("new W1")
    _refused(attrs.evolve(tape, returns=returns), "the tape says how to return")


def test_a_result_returned_as_a_float_is_a_single_float():
    tape = hw.multiclass(num_inputs=2, num_hidden=3, batch=True).tape("run", sizes={"batch": 4})
    _refused(attrs.evolve(tape, returns={**tape.returns, "probabilities": Returned("float")}),
             r"probabilities is returned as a float, but it is f64\[4,3\]")


def test_a_donated_result_fits_its_feed_and_each_feed_takes_one():
    tape = _multiclass_tape(donate=True)
    _refused(attrs.evolve(tape, returns={**tape.returns, "new b1": Returned("donated", "W1")}),
             "results new W1 and new b1 are both donated into feed W1")
    _refused(attrs.evolve(tape, returns={**tape.returns, "new b1": Returned("donated", "x")}),
             r"new b1 \(f64\[3\]\) is donated into feed x, whose array is f64\[4,2\]")
    _refused(attrs.evolve(tape, returns={**tape.returns, "new b1": Returned("later")}), "returned as 'later'")


def test_a_feed_donated_into_is_not_also_returned_as_it_was():
    w = tg.param("w", shape=(2,))
    program = tg.compile(tg.sum(tg.square(w)), wrt=[w], outputs={"w": w})
    from tapegraph.compile.lower import lower
    roots = [("objective", program.objective, "forward"), ("w as given", w, "forward"),
             ("new w", w - program.gradients[0], "update")]
    with pytest.raises(TapeCheckError, match="result w as given is feed w as the caller gave it, but result new w"):
        lower(roots, {}, ["float", "raw", ("into", "w")])


def test_lowering_refuses_an_unknown_way_to_return_a_result():
    from tapegraph.compile.lower import lower
    w = tg.param("w", shape=(2,))
    roots = [("objective", tg.sum(tg.square(w)), "forward")]
    with pytest.raises(tg.GraphError, match="unknown way to return result objective: 'copy'"):
        lower(roots, {}, ["copy"])
    with pytest.raises(tg.GraphError, match="into the array of feed 'v', but this tape's feeds are \\['w'\\]"):
        lower(roots, {}, [("into", "v")])
    with pytest.raises(tg.GraphError, match="1 ways to return results given for 0 results"):
        lower([(None, roots[0][1], "forward")], {}, ["float"])


def test_derived_attributes_must_be_what_the_op_derives_from_the_shapes():
    x = tg.param("x", shape=(4, 3))
    tape = tg.compile(tg.mean(tg.tanh(x)), wrt=[x]).tape()
    position = _position(tape, lambda instruction: instruction.derived)
    derived = dict(tape.instructions[position].derived)
    wrong = {key: (value * 2 if isinstance(value, float) else value) for key, value in derived.items()}
    assert wrong != derived
    _refused(_with(tape, position, derived=tuple(sorted(wrong.items()))), "gives its kernel .* but mean derives")
    _refused(_with(tape, 0, derived=(("scale", 1.0),)), "gives its kernel {'scale': 1.0}, but tanh derives {}")
