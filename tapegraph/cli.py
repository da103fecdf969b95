"""The ``tapegraph`` command: print, check and draw the tapes of a model.

    tapegraph dump ridge                       # both tapes of the built-in ridge model, batch=1
    tapegraph dump model.py:build --reverse    # the reverse tape of your own model
    tapegraph dump ridge --format json         # the tape as JSON (schema: tapegraph.inspect.export)
    tapegraph gradcheck mlp --shapes batch=8   # gradients against central differences
    tapegraph draw multiclass -o graph.png     # a picture of the expression graph

A TARGET is a built-in model name (``linear``, ``ridge``, ``mlp``,
``multiclass``: the homework's models as ``fit`` trains them, from
``models/catalog.py``) or ``path/to/script.py:NAME`` /
``package.module:NAME``: a module-level ``tg.Program`` or optimizer, or a
function called with no arguments that returns one of those, a
``(program, params, inputs)`` tuple, or an ``(objective, [params...])``
pair to compile. ``docs/cli.md`` has the details and real output.

Mistakes in what is typed (a bad option, an unknown model, a missing
file, a function returning the wrong thing) print one line,
``tapegraph: error: ...``, and exit with 2; a gradient check that fails,
or a program that fails while running, exits with 1.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import textwrap
from collections.abc import Mapping, Sequence
from typing import NoReturn

import numpy as np

from tapegraph.errors import TapegraphError
from tapegraph.expr import INPUT
from tapegraph.ops.softmax import CROSS_ENTROPY, PICK, SOFTMAX_MINUS_ONEHOT
from tapegraph.optim import Optimizer, SGDStep, sgd
from tapegraph.program import Program
from tapegraph.shapes import format_type, substitute, symbols
from tapegraph.testing import SETTINGS, check_grads, settings_for
from tapegraph.inspect.dump import format_section, format_tape
from tapegraph.compile.graph import build_graph
from tapegraph.inspect.export import dumps, tape_to_dict
from tapegraph.compile.tape import Tape
from tapegraph.targets import Target, TargetError, builtin_models, load_target, names_a_function

PROG = "tapegraph"
#: Exit codes: what was typed is wrong / a check or a run failed.
USAGE_ERROR = 2
FAILURE = 1
#: Size of a symbolic dimension that ``--shapes`` does not give: the
#: per-example tape for dumps and pictures; a few rows for gradient checks,
#: so that reductions over the batch are checked too.
DEFAULT_SIZE = {"dump": 1, "draw": 1, "gradcheck": 3}
#: Step size of ``--kind sgd`` for targets that are not built-in models.
DEFAULT_STEP_SIZE = 0.01
#: Ops that index their first operand's last axis with an integer input
#: (class labels): gradient checks draw labels below that axis's size.
_LABEL_OPS = (PICK, CROSS_ENTROPY, SOFTMAX_MINUS_ONEHOT)
_TARGET_FORMS = "a built-in model name, path/to/script.py:NAME or package.module:NAME"
#: The tapes ``--kind`` chooses; ``step`` is the target optimizer's.
_KINDS = ("value_and_grad", "run", "sgd", "step")


class CliError(Exception):
    """A one-line error for the user, and the exit code it ends the command with."""

    def __init__(self, message: str, code: int = USAGE_ERROR) -> None:
        super().__init__(message)
        self.code = code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` (default: ``sys.argv[1:]``); returns the exit code.

    Output goes to stdout; errors are one line on stderr.

    >>> main(["dump", "ridge", "--shapes", "batch=abc"])
    2
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            raise CliError(f"choose a command: dump, gradcheck or draw; see '{PROG} --help'")
        return args.run(args)
    except SystemExit as stop:  # --help and --version end here
        return stop.code if isinstance(stop.code, int) else 0
    except CliError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return error.code
    except TargetError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except TapegraphError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return FAILURE


# The command line.

class _ArgumentParser(argparse.ArgumentParser):
    """argparse, with its errors as one line that main prints (no usage block)."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message}; see '{self.prog} --help'")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``tapegraph`` and its subcommands ``dump``, ``gradcheck`` and ``draw``."""
    from tapegraph import __version__

    models = builtin_models()
    builtins = "\n".join(f"  {name:<11} {model.summary}" for name, model in models.items())
    parser = _ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print, check and draw the compiled tapes of a tapegraph model.",
        epilog=f"""TARGET is one of:
{builtins}
  path/to/script.py:NAME, package.module:NAME
              a module-level tg.Program or optimizer (tg.sgd, tg.adam, ...),
              or a function called with no arguments that returns one, a
              (program, params, inputs) tuple, or an (objective, [params...])
              pair

Symbolic dimensions (the built-in models' batch) take their sizes from
--shapes NAME=INT; those not given are 1 for dump and draw and 3 for
gradcheck, or come from the arrays the target returned.

Exit codes: 0 success; 1 a gradient check or a program failed;
2 a usage error (bad option, unknown model, missing file or function,
a function that returns the wrong thing). See docs/cli.md.""")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    dump = commands.add_parser(
        "dump", help="print the compiled tapes of a model", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_wrap("Print the tape of a model: feeds, constants, the forward and reverse instructions, results "
                    "and the buffer plan (the format of Program.dump, described in docs/tape.md), or the same "
                    "as JSON."),
        epilog="""examples:
  tapegraph dump ridge                          both tapes, batch=1
  tapegraph dump ridge --forward --shapes batch=32
  tapegraph dump mlp --kind sgd --update        the SGD update instructions
  tapegraph dump model.py:build --format json   JSON, as TAPE_SCHEMA in
                                                tapegraph/inspect/export.py""")
    _add_target_arguments(dump)
    only = dump.add_mutually_exclusive_group()
    only.add_argument("--forward", dest="section", action="store_const", const="forward",
                      help="only the forward section (computing the objective and outputs)")
    only.add_argument("--reverse", dest="section", action="store_const", const="reverse",
                      help="only the reverse section (computing the gradients)")
    only.add_argument("--update", dest="section", action="store_const", const="update",
                      help="only the update section (with --kind sgd or step)")
    dump.add_argument("--kind", choices=_KINDS,
                      help="which tape: value_and_grad (objective and gradients, the default), run (forward "
                           "only: objective and named outputs), sgd (a training step with its update section) "
                           "or step (the step of the optimizer named as TARGET, its default)")
    dump.add_argument("--step-size", type=_positive_float, metavar="FLOAT",
                      help=f"step size of --kind sgd (default: the built-in model's training step size, "
                           f"else {DEFAULT_STEP_SIZE})")
    dump.add_argument("--format", choices=("text", "json"), default="text",
                      help="text (as Program.dump, the default) or json (a stable, documented schema)")
    dump.set_defaults(run=_dump)

    gradcheck = commands.add_parser(
        "gradcheck", help="check a model's gradients against central differences",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_wrap("Compare the program's gradients with central differences of its objective, entry by "
                    "entry (tapegraph.testing.check_grads), and print each parameter's largest relative error. "
                    "Built-in models are checked at the parameters fit starts from, on rows of the homework's "
                    "data; other targets at the arrays they return, else at random values drawn from the "
                    "declared shapes (standard normal; integer inputs used as class labels between 0 and the "
                    "number of classes)."),
        epilog="""examples:
  tapegraph gradcheck ridge
  tapegraph gradcheck multiclass --shapes batch=8 --rtol 1e-7
  tapegraph gradcheck model.py:build --seed 3

exit code 0 when every gradient is within --rtol, 1 when one is not.""")
    _add_target_arguments(gradcheck)
    gradcheck.add_argument("--eps", type=_positive_float, metavar="FLOAT",
                           help=f"step of the central differences, also tried scaled by each entry above 1 "
                                f"(default by the program's precision: {_defaults('eps')})")
    gradcheck.add_argument("--rtol", type=_non_negative_float, metavar="FLOAT",
                           help=f"largest relative error that passes (default by the program's precision: "
                                f"{_defaults('rtol')})")
    gradcheck.add_argument("--seed", type=_non_negative_int, default=0, metavar="INT",
                           help="seed of the drawn parameters and inputs (default 0)")
    gradcheck.add_argument("--random-params", action="store_true",
                           help="draw the parameters at random (standard normal, from --seed) even when the "
                                "target gives them, for instance to check ridge away from its zero start")
    gradcheck.set_defaults(run=_gradcheck)

    draw = commands.add_parser(
        "draw", help="draw the expression graph or the tape of a model (PNG or SVG)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_wrap("Draw the expression graph of a model (forward and, unless --no-gradients, reverse) or its "
                    "tape as a timeline of instructions against buffer slots "
                    "(tapegraph.inspect.draw.draw_graph / draw_tape). The file's suffix chooses the format."),
        epilog="""examples:
  tapegraph draw ridge -o ridge_graph.png
  tapegraph draw ridge -o ridge_tape.svg --what tape --shapes batch=4
  tapegraph draw mlp -o step.png --what tape --kind sgd""")
    _add_target_arguments(draw)
    draw.add_argument("-o", "--output", required=True, metavar="FILE",
                      help="the picture to write, ending in .png or .svg")
    draw.add_argument("--what", choices=("graph", "tape"), default="graph",
                      help="graph (the expression graph, the default) or tape (the buffer timeline)")
    draw.add_argument("--kind", choices=_KINDS,
                      help="which tape, with --what tape (default value_and_grad, or step for an optimizer)")
    draw.add_argument("--step-size", type=_positive_float, metavar="FLOAT",
                      help="step size of --kind sgd (default as for dump)")
    draw.add_argument("--no-gradients", dest="gradients", action="store_false",
                      help="with --what graph, draw only the forward expressions")
    draw.set_defaults(run=_draw)
    return parser


def _defaults(setting: str) -> str:
    """``1e-05 in float64, 0.01 in float32``: a setting's defaults (``tapegraph.testing.SETTINGS``)."""
    return ", ".join(f"{getattr(settings, setting):g} in {dtype}" for dtype, settings in SETTINGS.items())


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=79)


def _add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="TARGET", help=f"the model: {_TARGET_FORMS} (see 'tapegraph --help')")
    parser.add_argument("--shapes", type=parse_shapes, action="append", default=[], metavar="NAME=INT[,NAME=INT]",
                        help="sizes of symbolic dimensions, such as batch=32 (repeatable)")
    parser.add_argument("--features", type=_positive_int, metavar="INT",
                        help="number of input features of a built-in model (default: the homework's data: "
                             "400 for linear and ridge, 1 for mlp, 2 for multiclass)")


def parse_shapes(text: str) -> dict[str, int]:
    """``"batch=32,seq=8"`` -> ``{"batch": 32, "seq": 8}``, or an error that says what is wrong.

    >>> parse_shapes("batch=32")
    {'batch': 32}
    >>> parse_shapes("batch=abc")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: the size of 'batch' must be a positive integer, got 'abc'
    """
    sizes: dict[str, int] = {}
    for item in text.split(","):
        name, equals, size = (part.strip() for part in item.partition("="))
        if not equals:
            raise argparse.ArgumentTypeError(f"{item.strip()!r} is not NAME=INT (for example batch=32)")
        if not name:
            raise argparse.ArgumentTypeError(f"{item.strip()!r} has no dimension name before '=' "
                                             "(write NAME=INT, for example batch=32)")
        if not name.isidentifier():
            raise argparse.ArgumentTypeError(f"{name!r} is not a dimension name (names are identifiers, such as batch)")
        if not (size.isascii() and size.isdigit()) or int(size) < 1:
            raise argparse.ArgumentTypeError(f"the size of {name!r} must be a positive integer, got {size!r}")
        if sizes.get(name, int(size)) != int(size):
            raise argparse.ArgumentTypeError(f"{name!r} is given two sizes, {sizes[name]} and {int(size)}")
        sizes[name] = int(size)
    return sizes


def _positive_float(text: str) -> float:
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    value = _float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _non_negative_int(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return int(text)


# Subcommands.

def _dump(args: argparse.Namespace) -> int:
    target = load_target(args.target, features=args.features, batch=_requested_batch(args, "dump"))
    kind = _kind(args.kind, target)
    if kind != "sgd" and args.step_size is not None:
        raise CliError("--step-size applies to --kind sgd only")
    sizes = resolve_sizes(target, _merged_shapes(args.shapes), DEFAULT_SIZE["dump"])
    step = _sgd_step(target, args.step_size) if kind == "sgd" else target.optimizer if kind == "step" else None
    tape, title = _tape_and_title(target.program, kind, sizes, step)
    available = {"value_and_grad": ("forward", "reverse"), "run": ("forward",),
                 "sgd": ("forward", "reverse", "update"), "step": ("forward", "reverse", "update")}[kind]
    if args.section is not None and args.section not in available:
        raise CliError(f"a {kind} tape has no {args.section} section (it has {', '.join(available)}); "
                       + ("use --kind sgd for the update section" if args.section == "update"
                          else "use --kind value_and_grad or sgd for the reverse section"))
    if args.format == "json":
        data = tape_to_dict(tape, title, None if args.section is None else [args.section])
        print(dumps(data))
    elif args.section is not None:
        print(format_section(tape, args.section, title))
    else:
        print(format_tape(tape, title))
    return 0


def _gradcheck(args: argparse.Namespace) -> int:
    target = load_target(args.target, features=args.features, batch=_requested_batch(args, "gradcheck"),
                         seed=args.seed)
    program = target.program
    if not program.wrt:
        raise CliError(f"{target.text} has no parameters to check: compile it with wrt=[...]")
    sizes = resolve_sizes(target, _merged_shapes(args.shapes), DEFAULT_SIZE["gradcheck"])
    if target.params is None:
        params, inputs = random_arrays(program, sizes, np.random.default_rng(args.seed))
        origin = f"random values (seed {args.seed})"
    elif args.random_params:
        params, _ = random_arrays(program, sizes, np.random.default_rng(args.seed), inputs=False)
        inputs = target.inputs or {}
        origin = f"random parameters (seed {args.seed})" + ("" if names_a_function(target.text) else ", on data rows")
    else:
        params, inputs = target.params, target.inputs or {}
        origin = "the arrays it returned" if names_a_function(target.text) else "fit's starting parameters, on data rows"
    drawn = target.params is None or args.random_params
    try:
        eps, rtol, _ = settings_for(program, args.eps, args.rtol)
    except TapegraphError as error:  # a float16 program without --eps and --rtol
        raise CliError(str(error).replace("eps= and rtol=", "--eps and --rtol")) from None
    shown = ", ".join(f"{name}={size}" for name, size in sorted(sizes.items())) or "fixed shapes"
    # a NaN or overflow is reported below, as a failed check, not as numpy warnings
    with np.errstate(all="ignore"):
        objective = program.run(params, inputs, outputs=["objective"])["objective"]
        print(f"gradcheck {target.text} ({shown}) at {origin}: objective {objective:.6g}, "
              f"eps {eps:g}, rtol {rtol:g}")
        if not math.isfinite(objective):
            raise CliError(f"gradient check failed: the objective is {objective} at these values, so its "
                           f"gradients cannot be compared" + (" (try another --seed)" if drawn else ""),
                           FAILURE)
        try:
            # rtol=inf: every parameter's largest error, to print them all before judging
            errors = check_grads(program, params, inputs, eps=eps, rtol=math.inf)
        except AssertionError:  # a NaN error: check_grads says where, below
            errors = {}
        if errors:
            width = max(len("parameter"), *(len(name) for name in errors))
            print(f"{'parameter':<{width}}  {'type':<12}  max relative error")
            for name, error in errors.items():
                node = program.params[name]
                print(f"{name:<{width}}  {format_type(node.shape, node.dtype):<12}  {error:.2e}")
        failed = [name for name, error in errors.items() if not error <= rtol]
        if failed or not errors:
            try:  # again with the real tolerance, for check_grads' account of the worst entry
                check_grads(program, params, inputs, eps=eps, rtol=rtol)
            except AssertionError as error:
                raise CliError(f"gradient check failed: {error}", FAILURE) from None
            raise CliError(f"gradient check failed for {', '.join(failed) or 'a parameter'}", FAILURE)
    print(f"ok: {len(errors)} gradient(s) agree with central differences within rtol {rtol:g}")
    return 0


def _draw(args: argparse.Namespace) -> int:
    from tapegraph.inspect.draw import draw_graph, draw_tape

    suffix = os.path.splitext(args.output)[1].lower()
    if suffix not in (".png", ".svg"):
        raise CliError(f"-o {args.output!r}: the picture's name must end in .png or .svg, "
                       f"which chooses the format")
    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder):
        raise CliError(f"-o {args.output!r}: the folder {folder!r} does not exist")
    if args.what == "graph" and (args.kind is not None or args.step_size is not None):
        raise CliError("--kind and --step-size choose a tape: use them with --what tape")
    if args.what == "tape" and not args.gradients:
        raise CliError("--no-gradients applies to --what graph only")
    if args.kind not in ("sgd", None) and args.step_size is not None:
        raise CliError("--step-size applies to --kind sgd only")
    target = load_target(args.target, features=args.features, batch=_requested_batch(args, "draw"))
    kind = _kind(args.kind, target)
    sizes = resolve_sizes(target, _merged_shapes(args.shapes), DEFAULT_SIZE["draw"])
    try:
        if args.what == "graph":
            draw_graph(target.program, args.output, gradients=args.gradients, sizes=sizes)
        elif kind == "sgd":
            draw_tape(_sgd_step(target, args.step_size), args.output, sizes=sizes)
        elif kind == "step":
            draw_tape(target.optimizer.tape(sizes), args.output, sizes=sizes)
        else:
            draw_tape(target.program, args.output, sizes=sizes, kind=kind)
    except OSError as error:
        raise CliError(f"cannot write {args.output!r}: {error.strerror or error}", FAILURE) from None
    print(f"wrote {args.output} ({args.what} of {target.text})")
    return 0


# Tapes and their text.

def _kind(requested: str | None, target: Target) -> str:
    """The tape ``--kind`` chooses: by default an optimizer's step, else value_and_grad."""
    if requested is None:
        return "step" if target.optimizer is not None else "value_and_grad"
    if requested == "step" and target.optimizer is None:
        raise CliError(f"--kind step is the step of an optimizer, and {target.text} is not one: name a "
                       f"module-level optimizer (script.py:opt, with opt = tg.adam(prog)), or use --kind sgd")
    return requested


def _tape_and_title(program: Program, kind: str, sizes: Mapping[str, int],
                    step: SGDStep | Optimizer | None) -> tuple[Tape, str]:
    # the titles Program.dump and SGDStep.dump print
    if kind == "step":
        return step.tape(sizes), step.dump(sizes).partition("\n")[0]
    if step is not None:
        return step.tape(sizes), f"sgd step: step_size = {step.step_size}"
    return program.tape(kind, sizes), f"program: {program._describe()}; {kind}"


def _sgd_step(target: Target, step_size: float | None) -> SGDStep:
    if not target.program.wrt:
        raise CliError(f"{target.text} has no parameters to update: compile it with wrt=[...] for --kind sgd")
    if step_size is None:
        step_size = target.step_size if target.step_size is not None else DEFAULT_STEP_SIZE
    return sgd(target.program, step_size)


# Sizes of symbolic dimensions.

def _merged_shapes(given: Sequence[Mapping[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for sizes in given:
        for name, size in sizes.items():
            if merged.get(name, size) != size:
                raise CliError(f"--shapes gives {name!r} two sizes, {merged[name]} and {size}")
            merged[name] = size
    return merged


def _requested_batch(args: argparse.Namespace, command: str) -> int:
    """The rows of data a built-in model is built with: --shapes batch=N, else the command's default."""
    return _merged_shapes(args.shapes).get("batch", DEFAULT_SIZE[command])


def symbolic_dimensions(program: Program) -> list[str]:
    """The names of the symbolic dimensions in a program's declared inputs and parameters, sorted."""
    nodes = [*program.inputs.values(), *program.params.values()]
    return sorted({name for node in nodes for name in symbols(node.shape)})


def resolve_sizes(target: Target, requested: Mapping[str, int], default: int) -> dict[str, int]:
    """A size for every symbolic dimension of the target's program.

    Taken from ``--shapes`` (``requested``), else from the arrays the target
    came with, else ``default``. A requested name the program does not
    have, or a size that disagrees with the target's arrays, is an error.
    """
    dimensions = symbolic_dimensions(target.program)
    unknown = sorted(name for name in requested if name not in dimensions)
    if unknown:
        has = f"its symbolic dimensions are {', '.join(dimensions)}" if dimensions else "it has no symbolic dimensions"
        raise CliError(f"--shapes names {', '.join(unknown)}, which {target.text} does not have; {has}")
    from_arrays = _sizes_of_arrays(target)
    for name, size in requested.items():
        if name in from_arrays and from_arrays[name] != size:
            raise CliError(f"--shapes {name}={size} disagrees with the arrays {target.text} returned, "
                           f"which have {name}={from_arrays[name]}")
    return {name: requested.get(name, from_arrays.get(name, default)) for name in dimensions}


def _sizes_of_arrays(target: Target) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for declared, given in ((target.program.params, target.params), (target.program.inputs, target.inputs)):
        for name, node in declared.items():
            shape = np.shape(given[name]) if given is not None and name in given else None
            if shape is None or len(shape) != len(node.shape):
                continue  # the program's own call reports it, naming the array
            for dim, size in zip(node.shape, shape):
                if isinstance(dim, str):
                    sizes.setdefault(dim, int(size))
    return sizes


# Random arrays for gradient checks.

def random_arrays(program: Program, sizes: Mapping[str, int], rng: np.random.Generator, *,
                  inputs: bool = True) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Parameters and (unless ``inputs=False``) inputs drawn from the declared shapes, for a gradient check.

    Floating-point values are standard normal; integer inputs are class
    labels, drawn below the size of the axis they index (see ``label_ranges``).
    """
    ranges = label_ranges(program, sizes)
    drawn: list[dict[str, np.ndarray]] = [{}, {}]
    for index, declared in enumerate((program.params, program.inputs if inputs else {})):
        for name, node in sorted(declared.items()):
            shape = substitute(node.shape, sizes)
            dtype = np.dtype(node.dtype)
            if dtype.kind == "f":
                drawn[index][name] = rng.standard_normal(shape).astype(dtype)
            elif dtype.kind in "iu" and name in ranges:
                drawn[index][name] = rng.integers(0, ranges[name], size=shape).astype(dtype)
            else:
                raise CliError(f"cannot draw values for {node.op} {name!r} ({node.type_str}): integer data is drawn "
                               f"only for class labels used by {', '.join(op.name for op in _LABEL_OPS)} or nll; return "
                               f"(program, params, inputs) from the function to give the arrays")
    return drawn[0], drawn[1]


def label_ranges(program: Program, sizes: Mapping[str, int]) -> dict[str, int]:
    """For each integer input used as class labels, the number of classes.

    Labels index the last axis of the scores they pick from (``cross_entropy(z, y)``,
    ``nll`` through ``pick``), so ``y`` takes values below that axis's size.
    """
    ranges: dict[str, int] = {}
    for node in build_graph([program.objective, *program.outputs.values(), *program.gradients]):
        if node.op not in _LABEL_OPS or len(node.inputs) < 2 or not node.inputs[0].shape:
            continue
        labels = node.inputs[1]
        if labels.op is INPUT:
            # the classes are on the op's axis (cross_entropy(z, y, axis=0)), the last by default
            classes = substitute(node.inputs[0].shape, sizes)[node.attr("axis", -1)]
            ranges[labels.name] = min(classes, ranges.get(labels.name, classes))
    return ranges
