"""What runs in the tokenizer child process (``service.tokenizing``). Kept free of heavy imports:
the child runs :func:`prepare` first, before anything imports torch."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections import OrderedDict
from collections.abc import Callable

KEEP = 4  # tokenizers the child holds, the most recently used (old versions' go)

_tokenizers: OrderedDict[str, Callable] = OrderedDict()  # by key


def prepare() -> None:
    """First thing in the child. Ctrl-C reaches the terminal's whole process group, and the
    parent, not the signal, ends the child (without a traceback on the terminal). And the child
    ends with its parent: killed (SIGKILL, out of memory), the parent never shuts it down, and a
    pool's worker never sees its queue close (it holds the queue's other end itself)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), daemon=True,
                         name="zscl-parent-watch").start()


def _exit_with(parent) -> None:
    parent.join()
    os._exit(0)


def warm() -> None:
    """What unpickling a tokenizer imports, imported before the first list."""
    import open_clip  # noqa: F401


def tokenize(key: str, tokenizer: Callable | None, texts: list[str], kwargs: dict):
    """``texts`` tokenized by ``key``'s tokenizer (given with its first list), as a numpy array."""
    if tokenizer is not None:
        _tokenizers[key] = tokenizer
    _tokenizers.move_to_end(key)
    while len(_tokenizers) > KEEP:
        _tokenizers.popitem(last=False)
    return _tokenizers[key](texts, **kwargs).numpy()
