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
that dies, or does not start, costs no answer: that list is tokenized in the process, and a
new child is started by a long list after a back-off (1 s, doubling up to a minute). The child
ends with its parent, however the parent ends (``service._tokenizer_child.prepare``).
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import torch

from . import _tokenizer_child as child
from ._tokenizer_child import KEEP

__all__ = ["TokenizerProcess", "MIN_TEXTS", "KEEP", "tokenizes_in_python"]

logger = logging.getLogger(__name__)

MIN_TEXTS = 256  # prompts (32 labels x 8 templates); a shorter one holds the lock for tens of ms at most
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 60.0  # after a child that died or did not start
STOP_S = 5.0  # close() waits this long for the child, then kills it


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
        self._delay, self._retry_at = 0.0, 0.0  # back-off after a child that died or failed

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
            if self._pool is None and not self._closed and time.monotonic() >= self._retry_at:
                self._start()
            if self._pool is not None and self._ready.done():  # else: tokenized here
                future, pool, first = self._submit(key, tokenizer, texts, kwargs)
        if future is None:
            return tokenizer(texts, **kwargs)
        try:
            tokens = torch.from_numpy(future.result())
            self._delay = 0.0  # a child that works: the next failure waits the least again
            return tokens
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
                    self._back_off()
            logger.warning("the tokenizer process ended; tokenizing %d prompts here, and starting "
                           "it again for a long list in %.0f s", len(texts), self._delay)
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
            future = pool.submit(child.tokenize, key, tokenizer if first else None, texts, kwargs)
        except (BrokenProcessPool, RuntimeError) as exc:  # it died since the last list
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
            if self._pool is None:
                raise RuntimeError("the tokenizer process could not start (the log says why)")
            return self._ready

    def _start(self) -> None:  # under the lock
        try:
            pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=child.prepare)
            self._ready = pool.submit(child.warm)
        except (OSError, RuntimeError) as exc:  # no /dev/shm, no file descriptors, exiting...
            self._back_off()
            logger.warning("could not start the tokenizer process (%s); long lists are tokenized "
                           "here, and it is tried again in %.0f s", exc, self._delay)
            return
        self._pool = pool
        self._sent.clear()

    def _back_off(self) -> None:  # under the lock
        self._delay = min(max(self._delay * 2, RETRY_FIRST_S), RETRY_MAX_S)
        self._retry_at = time.monotonic() + self._delay

    def close(self) -> None:
        """Stop the child within :data:`STOP_S` (long lists are tokenized in the process from
        now on)."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list(pool._processes.values())  # the one child
        # the pool's own shutdown joins (reaps) the child: joining it here too raced it
        stopper = threading.Thread(target=pool.shutdown, kwargs={"cancel_futures": True},
                                   name="zscl-tokenizer-stop", daemon=True)
        stopper.start()
        stopper.join(STOP_S)
        if stopper.is_alive():  # wedged: nothing waits for it
            logger.warning("the tokenizer process did not stop in %.0f s: killing it", STOP_S)
            for process in processes:
                process.kill()
            stopper.join(STOP_S)


class _Offloaded:
    """A tokenizer whose long lists go to a :class:`TokenizerProcess`; its other attributes
    (``context_length``, ...) are the wrapped tokenizer's."""

    def __init__(self, process: TokenizerProcess, key: str, tokenizer: Callable):
        self._process, self._key, self.wrapped = process, key, tokenizer

    def __call__(self, texts, **kwargs) -> torch.Tensor:
        return self._process.tokenize(self._key, self.wrapped, texts, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.wrapped, name)
