"""The errors a DataLoader worker raised, rebuilt from the text that torch passes on in their place.

A worker's error reaches the main process as a new exception whose message is ``"Caught <Type> in DataLoader
worker process N.\\nOriginal Traceback ..."`` followed by the worker's formatted traceback (a
``RuntimeError`` when the type cannot be rebuilt from one string). :func:`worker_errors` rebuilds the
worker's exceptions from that text, so the command line reports them exactly as with ``num_workers=0``.
"""

import builtins
import importlib
import re

WRAPPED = re.compile(r"Caught \w+ in .+?\.\nOriginal (Traceback \(most recent call last\):\n.*)", re.S)
CHAINED = re.compile(
    r"\n\n(?:The above exception was the direct cause of the following exception|"
    r"During handling of the above exception, another exception occurred):\n\n"
)
FRAME = re.compile(r'^  File "(.+?)", line \d+', re.M)


def worker_errors(err: BaseException) -> list[tuple[BaseException, str | None]]:
    """The chain of the worker error that ``err`` wraps, outermost first, each with the file of the frame
    that raised it; [] when ``err`` wraps none."""
    match = WRAPPED.match(str(err))
    if not match:
        return []
    return [rebuilt for rebuilt in map(rebuild, reversed(CHAINED.split(match[1]))) if rebuilt]


def rebuild(text: str) -> tuple[BaseException, str | None] | None:
    """The exception of one formatted traceback (type, message) and the file of its last frame."""
    files = FRAME.findall(text)
    lines = text.rstrip("\n").splitlines()
    last_frame = max((i for i, line in enumerate(lines) if FRAME.match(line)), default=-1)
    tail = [i for i, line in enumerate(lines) if i > last_frame and line and not line.startswith(" ")]
    if not tail:
        return None
    name, _, message = "\n".join(lines[tail[0] :]).partition(": ")
    cls = exception_class(name)
    if cls is None:
        return None
    exception = cls.__new__(cls)
    exception.args = (message,)
    return exception, files[-1] if files else None


def exception_class(name: str) -> type[BaseException] | None:
    """The exception class printed as ``name`` (``ValueError``, ``wsss.data.io.DataFileError``), else None."""
    module, _, qualname = name.rpartition(".")
    try:
        owner = importlib.import_module(module) if module else builtins
    except ImportError:
        return None
    cls = getattr(owner, qualname, None)
    return cls if isinstance(cls, type) and issubclass(cls, BaseException) else None
