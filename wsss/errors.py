"""The exceptions behind a failure, also those a DataLoader worker raised (torch passes on only their text).

A worker's error reaches the main process as a new exception whose message is ``"Caught <Type> in DataLoader
worker process N.\\nOriginal Traceback ..."`` followed by the worker's formatted traceback (a
``RuntimeError`` when the type cannot be rebuilt from one string). :func:`exception_chain` rebuilds the
worker's exceptions from that text, so the command line reports them exactly as with ``num_workers=0``.
"""

import builtins
import importlib
import re
import traceback
from collections.abc import Iterator

WRAPPED = re.compile(r"Caught \w+ in .+?\.\nOriginal (Traceback \(most recent call last\):\n.*)", re.S)
CHAINED = re.compile(
    r"\n\n(?:The above exception was the direct cause of the following exception|"
    r"During handling of the above exception, another exception occurred):\n\n"
)
FRAME = re.compile(r'^  File "(.+?)", line \d+', re.M)


def exception_chain(err: BaseException | None) -> Iterator[tuple[BaseException, str | None]]:
    """Each exception of ``err``'s chain, outermost first, with the file of the frame that raised it.

    A context that was suppressed (``raise ... from None``) ends the chain, as in Python's own traceback.
    An exception wrapping a DataLoader worker's error is followed by that error's own chain.
    """
    while err is not None:
        frames = traceback.extract_tb(err.__traceback__)
        yield err, frames[-1].filename if frames else None
        match = WRAPPED.match(str(err))
        if match:
            yield from reversed([rebuilt for rebuilt in map(rebuild, CHAINED.split(match[1])) if rebuilt])
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)


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
