"""Generate the blocking wrappers in ``ruv_swarm_persistence/sync.py`` from the async API.

Every public coroutine method of ``Storage`` (and of ``Repository``) gets a wrapper with the
same signature, return type and docstring that runs the async method on the facade's loop
thread. Members the facade writes by hand are listed in ``HAND_WRITTEN``.

    python scripts/gen_sync.py          # rewrite the generated sections of sync.py
    python scripts/gen_sync.py --check  # exit 1 with a diff if they are out of date
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "src" / "ruv_swarm_persistence" / "sync.py"
sys.path.insert(0, str(ROOT / "src"))

from ruv_swarm_persistence.repository import Repository  # noqa: E402
from ruv_swarm_persistence.storage import Storage  # noqa: E402

#: Storage members that are not "await the method and return its result": the facade's own.
HAND_WRITTEN = frozenset(
    {
        "close",
        "begin_transaction",
        "transaction",
        "subscribe",
        "agents",
        "tasks",
        "events",
        "messages",
        "metrics",
    }
)
#: Repository members written by hand (``builder`` is not a coroutine).
REPOSITORY_HAND_WRITTEN = frozenset({"builder"})


def coroutine_methods(cls: type, skip: frozenset[str]) -> list[tuple[str, Callable[..., Any]]]:
    """Public coroutine functions of ``cls`` in definition order, minus ``skip``."""
    seen: dict[str, Callable[..., Any]] = {}
    for klass in reversed(cls.__mro__):
        for name, member in vars(klass).items():
            if name.startswith("_") or name in skip:
                continue
            if inspect.iscoroutinefunction(member):
                seen[name] = member
            else:
                seen.pop(name, None)
    return list(seen.items())


def render(name: str, func: Callable[..., Any], receiver: str) -> str:
    """One wrapper method: same signature and docstring, body delegating to ``receiver``."""
    sig = inspect.signature(func)
    params = list(sig.parameters.values())[1:]  # drop self
    names = {p.name for p in params}
    if receiver in names:
        raise SystemExit(f"{name}: parameter named {receiver!r} would shadow the lambda's")
    decl: list[str] = ["self"]
    args: list[str] = []
    star_done = False
    for p in params:
        ann = f": {p.annotation}" if p.annotation is not inspect.Parameter.empty else ""
        default = f" = {p.default!r}" if p.default is not inspect.Parameter.empty else ""
        if p.kind is inspect.Parameter.KEYWORD_ONLY:
            if not star_done:
                decl.append("*")
                star_done = True
            decl.append(f"{p.name}{ann}{default}")
            args.append(f"{p.name}={p.name}")
        elif p.kind is inspect.Parameter.VAR_POSITIONAL:
            decl.append(f"*{p.name}{ann}")
            args.append(f"*{p.name}")
            star_done = True
        elif p.kind is inspect.Parameter.VAR_KEYWORD:
            decl.append(f"**{p.name}{ann}")
            args.append(f"**{p.name}")
        else:
            decl.append(f"{p.name}{ann}{default}")
            args.append(p.name)
    returns = sig.return_annotation
    if returns is inspect.Signature.empty:
        raise SystemExit(f"{name}: the async method needs a return annotation")
    doc = inspect.getdoc(func) or f"Blocking ``{name}``."
    doc_lines = doc.splitlines()
    if len(doc_lines) == 1:
        docstring = f'        """{doc_lines[0]}"""'
    else:
        body = "\n".join(f"        {line}" if line else "" for line in doc_lines[1:])
        docstring = f'        """{doc_lines[0]}\n{body}\n        """'
    call = f"self._run(lambda {receiver}: {receiver}.{name}({', '.join(args)}))"
    statement = call if returns == "None" else f"return {call}"
    return f"    def {name}({', '.join(decl)}) -> {returns}:\n{docstring}\n        {statement}\n"


def section(methods: list[tuple[str, Callable[..., Any]]], receiver: str) -> str:
    return "\n".join(render(name, func, receiver) for name, func in methods)


def replace_between(text: str, marker: str, body: str) -> str:
    begin, end = f"    # BEGIN GENERATED {marker}\n", f"    # END GENERATED {marker}\n"
    head, sep, rest = text.partition(begin)
    if not sep:
        raise SystemExit(f"marker {begin.strip()!r} not found in {TARGET}")
    _, sep, tail = rest.partition(end)
    if not sep:
        raise SystemExit(f"marker {end.strip()!r} not found in {TARGET}")
    return f"{head}{begin}{body}\n{end}{tail}"


def ruff_format(text: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", str(TARGET), "-"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise SystemExit(f"ruff format failed:\n{done.stderr}")
    return done.stdout


def generate(current: str) -> str:
    """``current`` with both generated sections rewritten from the async API."""
    text = replace_between(
        current, "STORAGE", section(coroutine_methods(Storage, HAND_WRITTEN), "s")
    )
    text = replace_between(
        text,
        "REPOSITORY",
        section(coroutine_methods(Repository, REPOSITORY_HAND_WRITTEN), "r"),
    )
    return ruff_format(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if sync.py is out of date")
    options = parser.parse_args()
    current = TARGET.read_text(encoding="utf-8")
    wanted = generate(current)
    if options.check:
        if wanted != current:
            diff = difflib.unified_diff(
                current.splitlines(keepends=True),
                wanted.splitlines(keepends=True),
                "sync.py (checked in)",
                "sync.py (generated)",
            )
            sys.stdout.writelines(diff)
            print("sync.py is out of date: run python scripts/gen_sync.py", file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        TARGET.write_text(wanted, encoding="utf-8")
        print(f"rewrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
