"""Long prompt lists tokenized in a child process, away from the API process's Python lock.

open_clip's ``SimpleTokenizer`` (OpenAI CLIP's BPE: ftfy, regex and merges in Python) holds
Python's lock for as long as it runs. While a head build tokenizes 1,000 new labels, every
other thread of the API process (the event loop, the decoding threads, the inference thread)
waits for that lock at each hand-over, and a cached request that takes 8 ms idle takes up to
90 ms (``benchmarks.heavy_bench --model tiny``; docs/serving.md, Head builds). So a list of
``min_texts`` prompts or more is tokenized by one child process per API process, which holds
each version's tokenizer (sent with its first list). The child is started by the first such
list, which is tokenized in the process meanwhile, as is every list until the child is ready
(it imports torch and open_clip: seconds): no request waits for it, and a process that never
sees a long list starts none. Shorter lists, a tokenizer whose work runs outside Python (a
Hugging Face one, as the starter's), and one that cannot be sent stay in the process. A child
that dies is started again at the next list, and the list it was given is tokenized in the
process: the request still gets its answer.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import torch

__all__ = ["TokenizerProcess", "MIN_TEXTS", "tokenizes_in_python"]

logger = logging.getLogger(__name__)

MIN_TEXTS = 64  # prompts; a shorter list costs less in the process than the hop to the child
KEEP = 4  # tokenizers the child holds, the most recently used (old versions' go)

_tokenizers: OrderedDict[str, Callable] = OrderedDict()  # in the child, by key


def _ignore_interrupts() -> None:
    """In the child, first: Ctrl-C reaches the whole terminal's process group, and the parent,
    not the signal, ends the child (at its shutdown), without a traceback on the terminal."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _warm() -> None:
    """In the child: what unpickling a tokenizer imports, imported before the first list."""
    import open_clip  # noqa: F401


def _tokenize(key: str, tokenizer: Callable | None, texts: list[str], kwargs: dict):
    """In the child: ``texts`` tokenized by ``key``'s tokenizer (given the first time)."""
    if tokenizer is not None:
        _tokenizers[key] = tokenizer
    _tokenizers.move_to_end(key)
    while len(_tokenizers) > KEEP:
        _tokenizers.popitem(last=False)
    return _tokenizers[key](texts, **kwargs).numpy()


def tokenizes_in_python(tokenizer: Callable) -> bool:
    """Whether ``tokenizer`` runs in Python, holding its lock: open_clip's ``SimpleTokenizer``
    (OpenAI CLIP's BPE, which most CLIP models use). A Hugging Face tokenizer (the starter's)
    runs in Rust and stays in the process."""
    from open_clip.tokenizer import SimpleTokenizer

    return isinstance(tokenizer, SimpleTokenizer)


class TokenizerProcess:
    """Hands long prompt lists to a child process (see the module's docstring).

    Args:
        min_texts: lists this long or longer go to the child.
    """

    def __init__(self, min_texts: int = MIN_TEXTS):
        self.min_texts = min_texts
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._ready: Future | None = None  # the current child's warm-up
        self._sent: OrderedDict[str, None] = OrderedDict()  # what the child holds, in its order
        self._unsendable: set[str] = set()
        self._closed = False

    def wrap(self, key: str, tokenizer: Callable) -> Callable:
        """``tokenizer`` as one that sends long lists to the child, where ``key`` names it there
        (a version id: one tokenizer per version); as it is where its work does not hold
        Python's lock (:func:`tokenizes_in_python`)."""
        return _Offloaded(self, key, tokenizer) if tokenizes_in_python(tokenizer) else tokenizer

    def tokenize(self, key: str, tokenizer: Callable, texts: Sequence[str], **kwargs) -> torch.Tensor:
        """``tokenizer(texts, **kwargs)``, by the child where the list is long enough."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if len(texts) < self.min_texts or key in self._unsendable:
            return tokenizer(texts, **kwargs)
        future = None
        with self._lock:  # keys counted and tasks submitted in one order: the child's
            if not self._closed:
                if self._pool is None:
                    self._start()
                if self._ready.done():  # else still starting: this list is tokenized here
                    future, pool, first = self._submit(key, tokenizer, texts, kwargs)
        if future is None:
            return tokenizer(texts, **kwargs)
        try:
            return torch.from_numpy(future.result())
        except BrokenProcessPool:
            logger.warning("the tokenizer process ended; tokenizing %d prompts here, and starting "
                           "it again for the next long list", len(texts))
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False)
        except Exception as exc:  # noqa: BLE001 - here, it raises again if it is the tokenizer's own
            with self._lock:
                self._sent.pop(key, None)
                if first:  # e.g. it does not pickle: it stays in this process
                    self._unsendable.add(key)
            logger.warning("the tokenizer process could not tokenize %d prompts for %s (%s: %s); "
                           "tokenizing them here%s", len(texts), key, type(exc).__name__, exc,
                           ", and every list of this version" if first else "")
        return tokenizer(texts, **kwargs)

    def _submit(self, key: str, tokenizer: Callable, texts: list[str], kwargs: dict
                ) -> tuple[Future, ProcessPoolExecutor, bool]:  # under the lock
        pool, first = self._pool, key not in self._sent
        self._sent[key] = None
        self._sent.move_to_end(key)
        while len(self._sent) > KEEP:
            self._sent.popitem(last=False)
        try:
            future = pool.submit(_tokenize, key, tokenizer if first else None, texts, kwargs)
        except BrokenProcessPool as exc:  # it died since the last list
            future = Future()
            future.set_exception(exc)
        return future, pool, first

    def start(self) -> Future:
        """Start the child now, if it is not running (the first long list does otherwise).

        Returns:
            A future done once the child can take lists.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("the tokenizer process is closed")
            if self._pool is None:
                self._start()
            return self._ready

    def _start(self) -> None:  # under the lock
        self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_ignore_interrupts)
        self._ready = self._pool.submit(_warm)
        self._sent.clear()

    def close(self) -> None:
        """Stop the child (long lists are tokenized in the process from now on)."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


class _Offloaded:
    """A tokenizer whose long lists go to a :class:`TokenizerProcess`; its other attributes
    (``context_length``, ...) are the wrapped tokenizer's."""

    def __init__(self, process: TokenizerProcess, key: str, tokenizer: Callable):
        self._process, self._key, self.wrapped = process, key, tokenizer

    def __call__(self, texts, **kwargs) -> torch.Tensor:
        return self._process.tokenize(self._key, self.wrapped, texts, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.wrapped, name)
