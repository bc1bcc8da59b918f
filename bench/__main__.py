"""Run every benchmark module and print one table per module (``make bench``)."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict

from .common import Options, Result, machine_info, parse_args, print_results

#: Benchmark modules in the order they run; each exposes ``run(options) -> (title, rows)``.
#: ``--only memory`` / ``--only sqlite.a`` / ``--only pg`` select by the name before ``_bench``.
MODULES = (
    "memory_bench",
    "sqlite_bench",
    "pg_bench",
    "task_path_bench",
    "worker_bench",
    "queue_controls_bench",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the modules ``--only`` selects (all by default)."""
    opts = parse_args(argv)
    tables = []
    for name in MODULES:
        prefix = name.removesuffix("_bench")
        mine = [o for o in opts.only if o == prefix or o.startswith(prefix + ".")]
        if opts.only and not mine:
            continue
        sub = Options(
            json=opts.json,
            quick=opts.quick,
            repeat=opts.repeat,
            # "sqlite" runs the whole module; "sqlite.a" only that benchmark.
            only=[] if prefix in mine else [o.removeprefix(prefix + ".") for o in mine],
        )
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{name}":
                raise
            continue  # a module this checkout does not have
        run: Callable[[Options], tuple[str, list[Result]]] = module.run
        title, results = run(sub)
        print_results(title, results, file=sys.stderr if opts.json else None)
        tables.append({"module": name, "title": title, "results": [asdict(r) for r in results]})
    if opts.json:
        print(json.dumps({"machine": machine_info(), "tables": tables}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
