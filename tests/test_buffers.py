"""Buffer planning: liveness lets deep networks reuse activation buffers."""

from __future__ import annotations

import numpy as np

import tapegraph as tg


def _deep_tanh_mlp(depth: int, width: int = 16) -> tg.Program:
    x = tg.input("x", shape=("batch", width))
    hidden = x
    params = []
    for layer in range(depth):
        W = tg.param(f"W{layer}", shape=(width, width))
        b = tg.param(f"b{layer}", shape=(width,))
        params += [W, b]
        hidden = tg.tanh(tg.affine(W, hidden, b))
    return tg.compile(tg.sum(hidden), wrt=params, outputs={"output": hidden})


def _activation_slots(program: tg.Program, batch: int, width: int = 16) -> list:
    tape = program.tape("run", sizes={"batch": batch}, outputs=["output"])
    return [buffer for buffer in tape.buffers if buffer.shape == (batch, width)]


def test_forward_tape_activation_buffers_do_not_grow_with_depth():
    shallow = _activation_slots(_deep_tanh_mlp(4), batch=32)
    deep = _activation_slots(_deep_tanh_mlp(32), batch=32)
    assert len(deep) == len(shallow) <= 3
    # 32 layers x 3 values (matmul, add, tanh) plus the input share those slots
    assert sum(len(buffer.values) for buffer in deep) == 1 + 32 * 3


def test_the_dump_shows_the_reuse():
    text = _deep_tanh_mlp(32).dump("run", sizes={"batch": 32}, outputs=["output"])
    activation_lines = [line for line in text.splitlines() if line.lstrip().startswith("s") and "f64[32,16]" in line
                        and "bytes" not in line and "=" not in line and "<-" not in line]
    assert 1 <= len(activation_lines) <= 3


def test_values_the_reverse_pass_needs_stay_alive():
    program = _deep_tanh_mlp(6)
    rng = np.random.default_rng(3)
    params = {name: 0.3 * rng.standard_normal(node.shape) for name, node in program.params.items()}
    tg.testing.check_grads(program, params, {"x": rng.standard_normal((4, 16))})
    tape = program.tape(sizes={"batch": 4})
    reverse_reads = {value for instruction in tape.section("reverse") for value in instruction.input_values}
    tanh_outputs = {instruction.value for instruction in tape.section("forward") if instruction.op.name == "tanh"}
    assert tanh_outputs & reverse_reads  # tanh's VJP reuses its forward result
