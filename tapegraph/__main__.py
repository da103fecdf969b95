"""``python -m tapegraph``: the ``tapegraph`` command (see ``tapegraph/cli.py`` and ``docs/cli.md``)."""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tapegraph`` with ``argv`` (default: the command line); returns the exit code."""
    from tapegraph.cli import main as run

    return run(argv)


if __name__ == "__main__":
    raise SystemExit(main())
