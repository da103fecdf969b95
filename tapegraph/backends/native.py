"""The native backend: a tape translated into numba code, a whole epoch per call.

Selected with ``tg.compile(..., backend="native")`` (the optional extra
``tapegraph[native]``). Binding a specialised tape translates it, from
each op's native form (``Op.native``, see ``tapegraph.ops.native``), into
the source of a Python module of numba functions with explicit loops:

- ``step``: the whole tape (forward, reverse and update sections), one
  native call per ``run``, ``value_and_grad`` or optimizer step;
- ``epoch`` (made on the first epoch): a loop over the steps of an epoch,
  choosing each step's rows (``order``, ``batch_size``), running every
  instruction, carrying the parameters and optimizer slots from step to
  step and keeping each step's objective, in one native call;
- ``map`` (made on the first ``Program.map``): the same loop over the
  rows of a data set for a tape without state, each step's results
  written into a row (or batch of rows) of the stacked outputs.

The tape decides what runs, as for the numpy backend: every value keeps
its planned buffer (allocated once per call, so concurrent calls share
nothing), a fresh result is a new array, a donated one is written into
the caller's array, and each result is returned as the tape says. Values
of shape ``()`` are numbers in local variables. The code is compiled
without fastmath and with numpy's error model (division by zero gives inf,
as numpy does), so results agree with the numpy backend to rounding.

Labels and other index operands (``NativeContext.checked``) are checked
before any native code runs (for an epoch, every row the epoch reads,
before its first step), with the numpy backend's messages naming the
instruction, and the step for an epoch. Inside
``tg.check_finite()`` a native program runs its numpy twin, checked, so a
NaN is reported with the instruction that made it, as on the numpy
backend.

The generated module is written to a cache folder, named by the hash of
its source, and imported from there, so that numba's ``cache=True`` keeps
the machine code across processes: ``$TAPEGRAPH_CACHE_DIR`` if set, else
``$XDG_CACHE_HOME/tapegraph`` (``~/.cache/tapegraph``), in the
subfolder ``native`` (a folder in the temporary directory if that one
cannot be written).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tapegraph.backends.codegen import identifiers, tape_ops
from tapegraph.compile.tape import Instruction, Tape
from tapegraph.errors import MissingExtraError, OpError, TapeError
from tapegraph.ops.native import NativeContext, elementwise_source, entry_form

#: Options every generated function is compiled with: numpy's semantics
#: for division by zero and invalid values, no reassociation (fastmath off).
NJIT_OPTIONS = "cache=True, error_model='numpy', fastmath=False"


#: Ufuncs whose numpy loop (SIMD) beats numba's scalar calls on large
#: arrays; for arrays of at least ``NUMPY_LOOP_SIZE`` entries, native code
#: calls numpy for them (``numba.objmode``, about 1 us a call).
NUMPY_LOOPS = frozenset([np.tanh, np.exp, np.log, np.sqrt])
NUMPY_LOOP_SIZE = 4096

#: Whether a result read once by a later elementwise instruction is
#: computed in that instruction's loop (``_Translation._fusion``); off
#: only to compare with the unfused translation (the values are the same).
FUSE_ENTRIES = True


def require_numba():
    """The numba module, or ``MissingExtraError`` saying which extra to install."""
    try:
        import numba
    except ImportError as error:
        raise MissingExtraError(
            "the native backend needs numba, which is not installed: pip install 'tapegraph[native]' "
            f"(or pip install numba), or compile with backend='numpy' ({error})") from None
    return numba


def cache_dir() -> str:
    """The folder of generated native modules (``$TAPEGRAPH_CACHE_DIR``, else the user's cache)."""
    root = os.environ.get("TAPEGRAPH_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "tapegraph")
    return os.path.join(root, "native")


_import_lock = threading.Lock()


def load_module(text: str, kind: str) -> Any:
    """Write ``text`` to the cache folder as a module named by its hash, and import it.

    numba caches a function's machine code next to its file (``cache=True``)
    only for functions of a real module: not for code made by ``exec``.
    """
    digest = hashlib.sha256(text.encode()).hexdigest()[:24]
    name = f"tapegraph_native_{kind}_{digest}"
    with _import_lock:
        module = sys.modules.get(name)
        if module is not None:
            return module
        try:
            path = _write(cache_dir(), name, text)
        except OSError:
            # an unwritable cache folder costs the cache across processes, nothing else
            path = _write(os.path.join(tempfile.gettempdir(), f"tapegraph-native-{os.getuid()}"), name, text)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
        return module


def _write(folder: str, name: str, text: str) -> str:
    """The path of module ``name`` holding ``text`` in ``folder``, written if it is not there yet."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name + ".py")
    if not os.path.exists(path) or open(path, encoding="utf-8").read() != text:
        # written whole, then renamed: another process never imports half a file
        handle, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    return path


def _typed(value: Any, dtype: str) -> str:
    """A number of ``dtype`` as source."""
    if np.dtype(dtype).kind in "iu":
        return repr(int(value))
    text = repr(float(value))
    if text in ("inf", "-inf", "nan"):
        text = {"inf": "np.inf", "-inf": "-np.inf", "nan": "np.nan"}[text]
    return text if dtype == "float64" else f"np.{dtype}({text})"


def _flat_copy(target: str, source: str, shape: Sequence[int]) -> str:
    """A loop copying ``source`` into ``target`` (both C-contiguous): a loop
    of item copies costs less than numba's slice assignment on small arrays."""
    size = int(np.prod(shape, dtype=np.int64))
    if len(shape) == 1:
        return f"for r0_k in range({size}):\n    {target}[r0_k] = {source}[r0_k]"
    flat_target, flat_source = f"r0_into_{target}", f"r0_from_{target}"  # one name per copy: types differ
    return (f"{flat_target} = {target}.reshape(({size},))\n{flat_source} = {source}.reshape(({size},))\n"
            f"for r0_k in range({size}):\n    {flat_target}[r0_k] = {flat_source}[r0_k]")


def _shape_source(leading: str, shape: Sequence[int]) -> str:
    """The source of the shape ``(leading, *shape)``, ``leading`` an expression."""
    return f"({leading}, {''.join(f'{size}, ' for size in shape)})"


class _Translation:
    """A tape as native statements: names of every value, the body, the results.

    Feeds are named by identifiers (arrays) or ``v<value>`` (numbers); the
    statements that bind them from a call's arguments are the caller's
    (``step`` and ``epoch`` bind them differently).
    """

    def __init__(self, tape: Tape) -> None:
        self.tape = tape
        self.arguments = dict(zip([feed.name for feed in tape.feeds],
                                  identifiers([feed.name for feed in tape.feeds], tape_ops(tape))))
        self.names: dict[int, str] = {}
        #: Allocations at the top of a function: buffers and fresh arrays.
        self.allocations: list[str] = []
        #: Constant arrays, each an argument ``r1_c<value>``.
        self.constant_arrays: list[tuple[str, np.ndarray]] = []
        #: (feed name, check, instruction position) of each checked index operand that is a feed.
        self.labels: list[tuple[str, Callable[[np.ndarray], None], int]] = []
        self.body: list[str] = []
        self.feed_values = {feed.value: feed for feed in tape.feeds}
        #: (shape, dtype) of every value, by value number.
        self.types = {feed.value: (feed.shape, feed.dtype) for feed in tape.feeds}
        self.types.update((constant.value, (constant.array.shape, constant.array.dtype.name))
                          for constant in tape.constants)
        self.types.update((instruction.value, (instruction.shape, instruction.dtype))
                          for instruction in tape.instructions)
        allocated: set[str] = set()

        def allocate(name: str, shape, dtype) -> None:
            if name not in allocated:
                allocated.add(name)
                self.allocations.append(f"{name} = np.empty({tuple(shape)!r}, dtype=np.{dtype})")

        #: Lines binding each feed's value from its argument-like source, set per function.
        self.feed_copies: list[str] = []
        for feed in tape.feeds:
            if not feed.shape:
                self.names[feed.value] = f"v{feed.value}"
            elif feed.in_place:
                self.names[feed.value] = self.arguments[feed.name]
            else:
                allocate(f"s{feed.slot}", feed.shape, feed.dtype)
                self.feed_copies.append(_flat_copy(f"s{feed.slot}", self.arguments[feed.name], feed.shape))
                self.names[feed.value] = f"s{feed.slot}"
        for constant in tape.constants:
            if constant.array.shape == ():
                self.names[constant.value] = _typed(constant.array[()], constant.array.dtype.name)
            else:
                name = f"r1_c{constant.value}"
                # a fill is a broadcast view: native code reads C-contiguous arrays
                self.constant_arrays.append((name, np.ascontiguousarray(constant.array)))
                self.names[constant.value] = name
        #: The positions of the instructions reading each value, once per operand.
        self.readers: dict[int, list[int]] = {}
        for position, instruction in enumerate(tape.instructions):
            for value in instruction.input_values:
                self.readers.setdefault(value, []).append(position)
        self.returned = {value for _, value in tape.results.values()}
        #: Value -> (entry expression as a function of index names, the
        #: names it reads) of each value computed where its one reader reads
        #: it instead of in a pass of its own (``_fusion``).
        self.fused: dict[int, tuple[Callable[[Sequence[str]], str], frozenset[str]]] = {}
        for position, instruction in enumerate(tape.instructions):
            self._instruction(position, instruction, allocate)

    def _out_name(self, instruction: Instruction) -> str:
        """The name ``instruction`` writes its result to."""
        destination = instruction.destination
        if not instruction.shape:
            return f"v{instruction.value}"
        if destination.kind == "fresh":
            return f"r{instruction.value}"
        if destination.kind == "donated":
            return self.arguments[destination.feed]
        return f"s{instruction.output}"

    def _context(self, position: int, instruction: Instruction, out: str) -> NativeContext:
        """The instruction's ``NativeContext``; operands fused into it are entry expressions."""
        types = [self._type(value) for value in instruction.input_values]
        attributes = {**dict(instruction.static), **dict(instruction.derived)}
        ctx = NativeContext([self.names[value] for value in instruction.input_values],
                            [shape for shape, _ in types], [dtype for _, dtype in types],
                            out, instruction.shape, instruction.dtype, attributes, f"w{position}")
        for index, value in enumerate(instruction.input_values):
            if value in self.fused:
                ctx.fused[index] = self.fused[value][0]
        return ctx

    def _fusion(self, position: int, instruction: Instruction, ctx: NativeContext) -> int | None:
        """The position of the one instruction that computes this one's result where it reads it, or None.

        A result is fused into its reader (saving a pass that stores it and
        one that loads it) when each of its entries is a function of one
        entry of each operand (``entry_form``), it is float64 from float64
        operands (an inline expression then rounds as a stored entry
        does, so the values are bit for bit those of the two passes), it
        lives in a planned buffer and is read once, by a later
        elementwise instruction of the same shape, and nothing in between
        (the reader included) writes a buffer it reads. The tape is
        unchanged: this is a choice of how to translate it.
        """
        if not instruction.shape or instruction.destination.kind != "slot" or instruction.value in self.returned:
            return None
        readers = self.readers.get(instruction.value, [])
        if len(readers) != 1:
            return None
        reader = self.tape.instructions[readers[0]]
        types = [self._type(value) for value in instruction.input_values]
        if instruction.dtype != "float64" or any(dtype != "float64" for _, dtype in types) or ctx.checks:
            return None
        if not isinstance(reader.op.native, str) or reader.shape != instruction.shape or reader.dtype != "float64":
            return None
        operands = [self.names[value] for value in instruction.input_values]
        reader_types = [self._type(value) for value in reader.input_values]
        if self._numpy_loop(instruction.op, instruction, types, operands, ctx.out) or \
                self._numpy_loop(reader.op, reader, reader_types, [], ""):
            return None
        reads = self._reads(instruction)
        for later in self.tape.instructions[position + 1:readers[0] + 1]:
            if self._out_name(later) in reads:
                return None
        return readers[0]

    def _reads(self, instruction: Instruction) -> frozenset[str]:
        """The names ``instruction`` reads: its operands', and through a fused operand the names that one reads."""
        reads = {self.names[value] for value in instruction.input_values}
        for value in instruction.input_values:
            if value in self.fused:
                reads |= self.fused[value][1]
        return frozenset(reads)

    def _instruction(self, position: int, instruction: Instruction, allocate: Callable) -> None:
        op = instruction.op
        if op.native is None:
            raise OpError(f"op {op.name!r} has no native form (Op.native), so {instruction.section} instruction "
                          f"{position} ({instruction.label}) cannot run on the native backend; declare one "
                          "(see docs/custom_ops.md) or compile with backend='numpy'")
        destination = instruction.destination
        scalar = not instruction.shape
        out = self._out_name(instruction)
        ctx = self._context(position, instruction, out)
        header = f"# {position} {instruction.section} {op.name} -> %{instruction.value} {instruction.label}"
        form = entry_form(op.native, ctx)
        reader = self._fusion(position, instruction, ctx) if form is not None and FUSE_ENTRIES else None
        if reader is not None:
            self.fused[instruction.value] = (form, self._reads(instruction))
            self.body.append(f"{header}: fused into {reader}, computed there entry by entry")
            self.names[instruction.value] = out
            return
        if not scalar and destination.kind != "donated":
            allocate(out, instruction.shape, instruction.dtype)
        operands = list(ctx.operands)
        types = [self._type(value) for value in instruction.input_values]
        fused_here = [f"%{value}" for value in instruction.input_values if value in self.fused]
        if fused_here:
            header += f" (computes {', '.join(fused_here)} in its loop)"
        if self._numpy_loop(op, instruction, types, operands, out):
            # numpy's own loop on a large array: its SIMD transcendental
            # functions beat numba's scalar ones (tanh of 256x512: 0.66 ms
            # against 5.8 ms), and give numpy's values bit for bit
            call = f"np.{op.kernel.__name__}({', '.join(operands)}, out={out})"
            text = f"with numba.objmode():\n    {call}"
        elif isinstance(op.native, str):
            text = elementwise_source(op.native, ctx)
        else:
            text = op.native(ctx)
        for name, size in ctx.scratch_arrays:
            allocate(name, (size,), instruction.dtype)
        lines = text.split("\n")
        if scalar and instruction.dtype != "float64" and np.dtype(instruction.dtype).kind == "f":
            # a number keeps its dtype (float32 arithmetic stays float32)
            lines.append(f"{out} = np.{instruction.dtype}({out})")
        self.body.append(header)
        self.body.extend(lines)
        if scalar and destination.kind == "donated":
            self.body.append(f"{self.arguments[destination.feed]}[()] = {out}")
        tape_constants = self.tape.constants
        for index, check in ctx.checks:
            value = instruction.input_values[index]
            feed = self.feed_values.get(value)
            if feed is not None:
                self.labels.append((feed.name, check, position))
            else:  # a constant: checked now, once
                constant = next(item for item in tape_constants if item.value == value)
                check(constant.array)
        self.names[instruction.value] = out

    @staticmethod
    def _numpy_loop(op, instruction: Instruction, types, operands, out: str) -> bool:
        """True for a transcendental ufunc on a large array, which numpy's loop (``numba.objmode``) runs faster."""
        if not isinstance(op.kernel, np.ufunc) or op.kernel not in NUMPY_LOOPS or not instruction.shape:
            return False
        if int(np.prod(instruction.shape, dtype=np.int64)) < NUMPY_LOOP_SIZE:
            return False
        # every operand an array of the result's shape and dtype (no number, no broadcasting)
        return all(shape == instruction.shape and dtype == instruction.dtype for shape, dtype in types)

    def _type(self, value: int) -> tuple[tuple[int, ...], str]:
        """The (shape, dtype) of value ``%value``."""
        return self.types[value]

    def feed_binding(self, feed, source: str, scalar_source: str | None = None) -> str:
        """The statement giving a feed's value from ``source`` (an array expression)."""
        if not feed.shape:
            text = scalar_source if scalar_source is not None else f"{source}[()]"
            if np.dtype(feed.dtype).kind == "f" and feed.dtype != "float64":
                text = f"np.{feed.dtype}({text})"
            return f"v{feed.value} = {text}"
        return f"{self.arguments[feed.name]} = {source}"


def _indent(lines: Sequence[str], depth: int) -> list[str]:
    pad = "    " * depth
    return [pad + line if line else line for text in lines for line in text.split("\n")]


class NativeExecutable:
    """A tape bound to native code (see the module docstring)."""

    def __init__(self, tape: Tape, feed_order: Sequence[str]) -> None:
        require_numba()
        self.tape = tape
        self.feed_order = tuple(feed_order)
        self.translation = _Translation(tape)
        self._feeds = {feed.name: feed for feed in tape.feeds}
        #: The feeds the caller's arrays of are written (donated).
        donated = {how.feed for how in tape.returns.values() if how.kind == "donated"}
        donated |= {instruction.destination.feed for instruction in tape.instructions
                    if instruction.destination.kind == "donated"}
        self._donated = frozenset(donated)
        self._labels = self._label_checks()
        self._step_text = self._step_source()
        self._step = None
        self._epochs: dict[Any, Callable] = {}
        self._epoch_texts: dict[Any, str] = {}
        self._maps: dict[Any, Callable] = {}
        self._map_texts: dict[Any, str] = {}
        self._numpy = None
        self._lock = threading.Lock()

    # Generating the source.

    def _step_arguments(self) -> list[str]:
        translation = self.translation
        return [translation.arguments[name] for name in self.feed_order] + \
            [name for name, _ in translation.constant_arrays]

    def _step_source(self) -> str:
        translation = self.translation
        tape = self.tape
        lines = ['"""Generated by tapegraph: a tape as numba code (see tapegraph.backends.native)."""', "",
                 "import numba", "import numpy as np", "", "",
                 f"@numba.njit({NJIT_OPTIONS})", f"def step({', '.join(self._step_arguments())}):"]
        body = list(translation.allocations)
        for feed in tape.feeds:
            if not feed.shape:
                argument = translation.arguments[feed.name]
                # donated numbers come as 0-d arrays, others as numbers
                source = f"{argument}[()]" if feed.name in self._step_donated() else argument
                body.append(translation.feed_binding(feed, argument, source))
        body += translation.feed_copies + translation.body
        results = []
        returned: set[str] = set()
        for name, (_, value) in tape.results.items():
            how = tape.returns[name]
            expression = translation.names[value]
            shape, _ = translation._type(value)
            if how.kind == "donated":
                target = translation.arguments[how.feed]
                written = any(instruction.destination.kind == "donated" and instruction.destination.feed == how.feed
                              and instruction.value == value for instruction in tape.instructions)
                if not written:
                    body.append(f"{target}[()] = {expression}" if not shape else _flat_copy(target, expression, shape))
                results.append("0")
                continue
            given = value in translation.feed_values or any(item.value == value for item in tape.constants)
            if shape and how.kind == "new" and (expression in returned or given):
                # a feed, a constant, or an array returned twice: a copy the caller owns
                expression = f"{expression}.copy()"
            returned.add(expression)
            results.append(expression)
        body.append(f"return ({''.join(result + ', ' for result in results)})")
        lines += _indent(body, 1)
        return "\n".join(lines) + "\n"

    def _step_donated(self) -> frozenset[str]:
        return frozenset(name for name in self._donated if not self._feeds[name].shape)

    def source(self, check: bool = False) -> str:
        """The generated numba module of the step (and of the epochs and maps made so far)."""
        return "\n\n".join([self._step_text, *self._epoch_texts.values(), *self._map_texts.values()])

    # Running one step.

    def _label_checks(self) -> list[tuple[int, str, Callable[[np.ndarray], None], int]]:
        positions = {name: index for index, name in enumerate(self.feed_order)}
        return [(positions[name], name, check, position) for name, check, position in self.translation.labels]

    def _check_labels(self, arrays: Sequence[Any]) -> None:
        for index, _, check, position in self._labels:
            try:
                check(np.asarray(arrays[index]))
            except IndexError as error:
                raise self._instruction_error(position, error) from None

    def _instruction_error(self, position: int, error: Exception) -> TapeError:
        from tapegraph.inspect.dump import format_instruction
        instruction = self.tape.instructions[position]
        return TapeError(f"{instruction.section} instruction {position} failed ({type(error).__name__}: {error}):\n"
                         f"  {format_instruction(position, instruction)}")

    def _compiled_step(self) -> Callable:
        if self._step is None:
            with self._lock:
                if self._step is None:
                    self._step = load_module(self._step_text, "step").step
        return self._step

    def function(self, check: bool = False) -> Callable:
        """The step: one array per feed (in ``feed_order``) in, the results as the tape's ``returns`` say.

        With ``check`` it is the numpy backend's checked step of the same
        tape (see ``tg.check_finite``).
        """
        if check:
            return self._numpy_twin().function(check=True)
        native = self._compiled_step()
        feeds = [self._feeds[name] for name in self.feed_order]
        donated = self._step_donated()
        # per argument: 0 an array, 1 a number, 2 a donated 0-d array
        forms = [2 if feed.name in donated else (1 if not feed.shape else 0) for feed in feeds]
        # how a number feed is passed: int, bool (a condition) or float
        numbers = [{"i": int, "u": int, "b": bool}.get(np.dtype(feed.dtype).kind, float) for feed in feeds]
        constants = [array for _, array in self.translation.constant_arrays]
        returns = []
        for name, (_, value) in self.tape.results.items():
            how = self.tape.returns[name]
            shape, dtype = self.translation._type(value)
            returns.append((how.kind, not shape, dtype, self.feed_order.index(how.feed) if how.kind == "donated" else -1))
        labels = bool(self._labels)

        def run(*arrays: Any) -> tuple:
            if labels:
                self._check_labels(arrays)
            given = []
            for array, form, number in zip(arrays, forms, numbers):
                if form == 1:
                    given.append(number(array))
                elif form == 0 and not array.flags.c_contiguous:
                    given.append(np.ascontiguousarray(array))
                else:
                    given.append(array)
            outputs = native(*given, *constants)
            results = []
            for output, (kind, scalar, dtype, feed) in zip(outputs, returns):
                if kind == "float":
                    results.append(float(output))
                elif kind == "donated":
                    results.append(arrays[feed])
                elif scalar and kind == "new":
                    results.append(np.array(output, dtype=dtype))
                else:
                    results.append(output)
            return tuple(results)
        return run

    def failure(self, error: Exception) -> TapeError:
        """``error`` as a ``TapeError``; errors of the checked (numpy) step name their instruction."""
        if isinstance(error, TapeError):
            return TapeError(str(error))
        if self._numpy is not None:
            return self._numpy.failure(error)
        return TapeError(f"running the native tape failed ({type(error).__name__}: {error})")

    def _numpy_twin(self):
        if self._numpy is None:
            from tapegraph.backends.numpy import Executable
            self._numpy = Executable(self.tape, self.feed_order)
        return self._numpy

    # Running an epoch.

    def epoch_plan(self) -> dict[str, str] | None:
        """For an optimizer step's tape: each state feed updated by a result (result name -> feed), else None.

        An epoch carries ``new X`` into feed ``X``. None when the tape has
        no objective, or a result's value is another feed's as given (it
        could be overwritten before it is carried).
        """
        tape = self.tape
        if "objective" not in tape.results or tape.returns["objective"].kind != "float":
            return None
        carried = {}
        for name, (_, value) in tape.results.items():
            if name == "objective":
                continue
            if not name.startswith("new ") or name[4:] not in self._feeds:
                return None
            feed = self._feeds[name[4:]]
            other = self.translation.feed_values.get(value)
            if other is not None and other.name != feed.name:
                return None
            carried[name] = feed.name
        return carried

    def epoch(self, state: Mapping[str, np.ndarray], fixed: Mapping[str, Any], data: Mapping[str, np.ndarray],
              rows: np.ndarray, steps: int, batch: int | None, hypers: np.ndarray, hyper_names: Sequence[str],
              labels_where: Callable[[int], str]) -> np.ndarray:
        """Run ``steps`` steps natively; the state arrays are updated in place; each step's objective.

        ``state``: an array per carried feed (written in place); ``fixed``:
        the other parameters; ``data``: each input's whole array; step
        ``i`` reads rows ``rows[i * batch:(i + 1) * batch]`` (one row
        ``rows[i]`` when ``batch`` is None); ``hypers``: one row of the
        hyperparameters (``hyper_names``) per step, or a single row for
        all.
        """
        self._check_epoch_labels(data, rows, steps, batch, labels_where, "epoch")
        batched = tuple(sorted(name for name in data)) if batch is not None else ()
        key = (batched, batch)
        function = self._epochs.get(key)
        if function is None:
            with self._lock:
                function = self._epochs.get(key)
                if function is None:
                    text = self._epoch_source(batch, tuple(hyper_names))
                    self._epoch_texts[key] = text
                    function = self._epochs[key] = load_module(text, "epoch").epoch
        arguments = []
        for feed in self.tape.feeds:
            if feed.name in state:
                arguments.append(state[feed.name])
            elif feed.kind == "input":
                arguments.append(np.ascontiguousarray(data[feed.name]))
            elif feed.kind == "hyper":
                continue
            else:
                value = fixed[feed.name]
                arguments.append(np.ascontiguousarray(value) if np.ndim(value) else np.asarray(value))
        constants = [array for _, array in self.translation.constant_arrays]
        step_rows = 1 if hypers.shape[0] > 1 else 0
        return function(*arguments, np.ascontiguousarray(rows, dtype=np.int64), steps,
                        np.ascontiguousarray(hypers, dtype=np.float64), step_rows, *constants)

    def _check_epoch_labels(self, data, rows, steps, batch, labels_where, what: str) -> None:
        """Refuse a bad label or index in any row the ``what`` (epoch or map) reads, naming its first step."""
        used = rows[:steps * (batch or 1)]
        for _, name, check, position in self._labels:
            values = np.asarray(data[name])
            try:
                check(values[used])
            except IndexError:
                # some step reads a bad entry: find the first (bisecting on
                # the steps whose rows hold one), to name it with the
                # message its own step would give
                width = batch or 1
                low, high = 0, steps - 1
                while low < high:
                    middle = (low + high) // 2
                    try:
                        check(values[used[:(middle + 1) * width]])
                        low = middle + 1
                    except IndexError:
                        high = middle
                try:
                    check(values[used[low * width:(low + 1) * width]] if batch else values[used[low]])
                except IndexError as error:
                    raise TapeError(f"{labels_where(low)}, refused before the {what}'s first step ran: "
                                    f"{self._instruction_error(position, error)}") from None
                raise AssertionError(f"a bad entry was found in the {what}'s rows but in none of its steps")

    def _bind_rows(self, feed, batch: int | None, binding: list[str], gathers: list[str],
                   allocations: list[str]) -> str:
        """The argument of input ``feed``'s whole data; appends the statements binding step ``r0_i``'s rows of it.

        One row ``r0_row`` (a view) when ``batch`` is None, else the
        batch's rows gathered into a buffer of the step's shape.
        """
        translation = self.translation
        argument = translation.arguments[feed.name]
        name = f"r3_{argument}"
        if batch is None:
            if feed.shape:
                binding.append(translation.feed_binding(feed, f"{name}[r0_row]"))
            else:
                binding.append(translation.feed_binding(feed, name, f"{name}[r0_row]"))
        else:
            gathered = f"r4_{argument}"
            allocations.append(f"{gathered} = np.empty({feed.shape!r}, dtype=np.{feed.dtype})")
            if len(feed.shape) == 2:  # a row of numbers: copied item by item
                gathers += [f"    for r0_k in range({feed.shape[1]}):",
                            f"        {gathered}[r0_j, r0_k] = {name}[r0_row, r0_k]"]
            else:
                gathers.append(f"    {gathered}[r0_j] = {name}[r0_row]")
            binding.append(translation.feed_binding(feed, gathered))
        return name

    @staticmethod
    def _row_selection(batch: int | None, gathers: list[str]) -> list[str]:
        """The statements choosing step ``r0_i``'s row (``r0_row``) or gathering its batch of rows."""
        if batch is None:
            return ["r0_row = r0_order[r0_i]"]
        if gathers:
            return [f"for r0_j in range({batch}):", f"    r0_row = r0_order[r0_i * {batch} + r0_j]", *gathers]
        return []

    def _epoch_source(self, batch: int | None, hyper_names: tuple[str, ...]) -> str:
        translation = self.translation
        tape = self.tape
        carried = self.epoch_plan()
        assert carried is not None
        state_feeds = set(carried.values())
        arguments, binding, gathers, allocations = [], [], [], []
        for feed in tape.feeds:
            argument = translation.arguments[feed.name]
            if feed.name in state_feeds or feed.kind == "param":
                name = f"r2_{argument}"
                arguments.append(name)
                binding.append(translation.feed_binding(feed, name))
                if not feed.shape:  # the array too, which a donated step writes into
                    binding.append(f"{argument} = {name}")
            elif feed.kind == "input":
                arguments.append(self._bind_rows(feed, batch, binding, gathers, allocations))
        for feed in tape.feeds:
            if feed.kind == "hyper":
                column = hyper_names.index(feed.name)
                binding.append(translation.feed_binding(feed, "", f"r0_hypers[r0_i * r0_hyper_step, {column}]"))
        arguments += ["r0_order", "r0_steps", "r0_hypers", "r0_hyper_step"]
        arguments += [name for name, _ in translation.constant_arrays]
        body = list(translation.allocations) + allocations + ["r0_objectives = np.empty(r0_steps)"]
        loop = self._row_selection(batch, gathers) + binding + translation.feed_copies + translation.body
        objective_value = tape.results["objective"][1]
        loop.append(f"r0_objectives[r0_i] = {translation.names[objective_value]}")
        for name, feed_name in carried.items():
            _, value = tape.results[name]
            feed = self._feeds[feed_name]
            if translation.feed_values.get(value) is feed:
                continue  # unchanged: the feed's own value
            target = f"r2_{translation.arguments[feed_name]}"
            expression = translation.names[value]
            if not feed.shape:
                loop.append(f"{target}[()] = {expression}")
            elif expression != translation.arguments[feed_name]:  # not written in place by the step
                loop.append(_flat_copy(target, expression, feed.shape))
        body.append("for r0_i in range(r0_steps):")
        body += _indent(loop, 1)
        body.append("return r0_objectives")
        lines = ['"""Generated by tapegraph: an epoch of a tape as numba code (see tapegraph.backends.native)."""', "",
                 "import numba", "import numpy as np", "", "",
                 f"@numba.njit({NJIT_OPTIONS})", f"def epoch({', '.join(arguments)}):"]
        lines += _indent(body, 1)
        return "\n".join(lines) + "\n"

    # Running a map (Program.map).

    def map(self, fixed: Mapping[str, Any], data: Mapping[str, np.ndarray], rows: np.ndarray, steps: int,
            batch: int | None, labels_where: Callable[[int], str]) -> dict[str, np.ndarray]:
        """Run ``steps`` steps natively, each on its rows of ``data``: each result stacked over the steps.

        ``fixed``: every feed that is not an input (the parameters);
        ``data``: each input's whole array; step ``i`` reads rows
        ``rows[i * batch:(i + 1) * batch]`` (one row ``rows[i]`` when
        ``batch`` is None). A result of shape ``s`` comes back as an array
        of shape ``(steps, *s)`` (one row per step), or, for batches,
        ``(steps * batch, *s[1:])`` (the batches one after another).
        Labels and indices in every row read are checked first.
        """
        self._check_epoch_labels(data, rows, steps, batch, labels_where, "map")
        function = self._maps.get(batch)
        if function is None:
            with self._lock:
                function = self._maps.get(batch)
                if function is None:
                    text = self._map_source(batch)
                    self._map_texts[batch] = text
                    function = self._maps[batch] = load_module(text, "map").map
        arguments = []
        for feed in self.tape.feeds:
            if feed.kind == "input":
                arguments.append(np.ascontiguousarray(data[feed.name]))
            else:
                value = fixed[feed.name]
                arguments.append(np.ascontiguousarray(value) if np.ndim(value) else np.asarray(value))
        constants = [array for _, array in self.translation.constant_arrays]
        stacked = function(*arguments, np.ascontiguousarray(rows, dtype=np.int64), steps, *constants)
        return dict(zip(self.tape.results, stacked))

    def _map_source(self, batch: int | None) -> str:
        """The numba module of ``map``: the step's body in a loop over the steps, its results stored row by row."""
        translation = self.translation
        tape = self.tape
        arguments, binding, gathers, allocations = [], [], [], []
        for feed in tape.feeds:
            if feed.kind == "input":
                arguments.append(self._bind_rows(feed, batch, binding, gathers, allocations))
            else:
                argument = translation.arguments[feed.name]
                name = f"r2_{argument}"
                arguments.append(name)
                binding.append(translation.feed_binding(feed, name))
        arguments += ["r0_order", "r0_steps"]
        arguments += [name for name, _ in translation.constant_arrays]
        body = list(translation.allocations) + allocations
        stores, results = [], []
        for index, (name, (_, value)) in enumerate(tape.results.items()):
            shape, dtype = translation._type(value)
            stacked = f"r5_{index}"
            results.append(stacked)
            expression = translation.names[value]
            if batch is None:
                body.append(f"{stacked} = np.empty({_shape_source('r0_steps', shape)}, dtype=np.{dtype})")
                if not shape:
                    stores.append(f"{stacked}[r0_i] = {expression}")
                    continue
                stores.append(f"r6_{index} = {stacked}[r0_i]")
            else:
                # Program.map refuses a result without the batch as its leading axis
                assert shape and shape[0] == batch, (name, shape, batch)
                body.append(f"{stacked} = np.empty({_shape_source(f'r0_steps * {batch}', shape[1:])}, "
                            f"dtype=np.{dtype})")
                stores.append(f"r6_{index} = {stacked}[r0_i * {batch}:(r0_i + 1) * {batch}]")
            stores.append(_flat_copy(f"r6_{index}", expression, shape))
        loop = self._row_selection(batch, gathers) + binding + translation.feed_copies + translation.body + stores
        body.append("for r0_i in range(r0_steps):")
        body += _indent(loop, 1)
        body.append(f"return ({''.join(result + ', ' for result in results)})")
        lines = ['"""Generated by tapegraph: a map of a tape over a data set as numba code '
                 '(see tapegraph.backends.native)."""', "",
                 "import numba", "import numpy as np", "", "",
                 f"@numba.njit({NJIT_OPTIONS})", f"def map({', '.join(arguments)}):"]
        lines += _indent(body, 1)
        return "\n".join(lines) + "\n"


class NativeBackend:
    """The native backend: numba code over preallocated buffers, a whole epoch per call."""

    name = "native"

    def bind(self, tape: Tape, feed_order: Sequence[str]) -> NativeExecutable:
        """Translate ``tape`` (compiled on first use; see ``NativeExecutable``)."""
        return NativeExecutable(tape, feed_order)


#: The one instance ``get_backend("native")`` returns.
NATIVE = NativeBackend()
