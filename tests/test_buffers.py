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


def _buffer_rows(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("  slot"))
    return lines[start:-1]  # the header, a row per slot (the total follows)


def _layout(header: str, row: str) -> tuple[int, int, int]:
    """Where the type, the byte count's end and the values start in ``row``, from the header's words."""
    slot, kind, size, values = row.split()[:4]
    type_at = row.index(kind, row.index(slot) + len(slot))
    bytes_end = row.index(size, type_at + len(kind)) + len(size)
    return (header.index("type") - type_at, header.index("bytes") + 5 - bytes_end,
            header.index("values") - row.index(values, bytes_end))


def _usual_layout() -> tuple[int, int, int]:
    w = tg.param("w", shape=(3,))
    header, row, *_ = _buffer_rows(tg.compile(tg.sum(tg.square(w)), wrt=[w]).dump())
    return _layout(header, row)


def test_the_dumps_buffer_columns_widen_for_13_digit_byte_counts_and_long_types():
    H = tg.param("H", shape=(10**6, 10**6))  # 8e12 bytes: dumped, never allocated
    header, *rows = _buffer_rows(tg.compile(tg.sum(tg.square(H)), wrt=[H]).dump())
    assert rows[0].split() == ["s0", "f64[1000000,1000000]", "8000000000000", "%0,", "%4"]
    assert rows[-1].split() == ["s3", "f64[]", "8", "%2"]
    # every row keeps its columns where the headings are, as in a dump of small buffers
    assert {_layout(header, row) for row in rows} == {_usual_layout()}


def test_the_dumps_slot_column_widens_past_999_slots():
    xs = [tg.input(f"x{index}", shape=(2,)) for index in range(1001)]
    total = xs[0]
    for x in xs[1:]:
        total = total + x
    header, *rows = _buffer_rows(tg.compile(tg.sum(total), wrt=[]).dump("run"))
    assert len(rows) > 1000
    assert rows[1000].split()[:3] == ["s1000", "f64[2]", "16"]
    assert {_layout(header, row) for row in rows} == {_usual_layout()}


def test_values_the_reverse_pass_needs_stay_alive():
    program = _deep_tanh_mlp(6)
    rng = np.random.default_rng(3)
    params = {name: 0.3 * rng.standard_normal(node.shape) for name, node in program.params.items()}
    tg.testing.check_grads(program, params, {"x": rng.standard_normal((4, 16))})
    tape = program.tape(sizes={"batch": 4})
    reverse_reads = {value for instruction in tape.section("reverse") for value in instruction.input_values}
    tanh_outputs = {instruction.value for instruction in tape.section("forward") if instruction.op.name == "tanh"}
    assert tanh_outputs & reverse_reads  # tanh's VJP reuses its forward result
