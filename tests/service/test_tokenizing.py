"""Long prompt lists are tokenized in a child process (service.tokenizing), with the same tokens."""

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import open_clip
import pytest
import torch

from service.tokenizing import KEEP, TokenizerProcess, tokenizes_in_python
from tests.helpers.colour import classify_files, make_settings, png_bytes, running_client
from tests.helpers.processes import START_DEADLINE_S, STOP_DEADLINE_S

PROMPTS = [f"a photo of a {i}-th kind of gadget, in a box" for i in range(400)]


@pytest.fixture(scope="module")
def tokenizer():
    return open_clip.get_tokenizer("ViT-B-32")  # OpenAI CLIP's BPE, pure Python, shipped with open_clip


@pytest.fixture(scope="module")
def shared():
    """A child started and ready (each start imports torch and open_clip: seconds)."""
    tokenizers = TokenizerProcess(min_texts=64)
    tokenizers.start().result(START_DEADLINE_S)
    yield tokenizers
    tokenizers.close()


@pytest.fixture
def fresh():
    tokenizers = TokenizerProcess(min_texts=64)
    yield tokenizers
    tokenizers.close()


def _child(process: TokenizerProcess):
    pool = process._pool
    return None if pool is None else next(iter(pool._processes.values()), None)


def test_the_first_long_list_starts_the_child_and_does_not_wait_for_it(tokenizer, fresh):
    assert torch.equal(fresh.wrap("v1", tokenizer)(PROMPTS), tokenizer(PROMPTS))
    assert "v1" not in fresh._sent  # tokenized here while the child starts
    child = _child(fresh)
    assert child is not None and child.pid != os.getpid()
    fresh.start().result(START_DEADLINE_S)
    assert torch.equal(fresh.wrap("v1", tokenizer)(PROMPTS), tokenizer(PROMPTS))  # by the child
    assert "v1" in fresh._sent
    fresh.close()
    child.join(10)
    assert not child.is_alive()
    assert torch.equal(fresh.wrap("v1", tokenizer)(PROMPTS), tokenizer(PROMPTS))  # here again


def test_a_short_list_stays_in_the_process(tokenizer, fresh):
    assert torch.equal(fresh.wrap("v1", tokenizer)(PROMPTS[:63]), tokenizer(PROMPTS[:63]))
    assert _child(fresh) is None


def test_the_child_gives_the_tokenizer_s_tokens_arguments_and_attributes(tokenizer, shared):
    wrapped = shared.wrap("same", tokenizer)
    assert torch.equal(wrapped(PROMPTS), tokenizer(PROMPTS))
    assert torch.equal(wrapped(PROMPTS, context_length=20), tokenizer(PROMPTS, context_length=20))
    assert wrapped.context_length == tokenizer.context_length
    assert "same" in shared._sent


def test_the_calling_thread_waits_without_working_while_the_child_tokenizes(tokenizer, shared):
    """What it is for: the thread that asked (a head builder) spends next to no CPU, so it holds
    Python's lock next to never, while the list is tokenized (2,000 prompts)."""
    prompts = PROMPTS * 5
    wrapped = shared.wrap("cpu", tokenizer)
    wrapped(prompts)  # the tokenizer sent: once per version

    def cpu(call) -> float:
        started = time.thread_time()
        call(prompts)
        return time.thread_time() - started

    here, apart = cpu(tokenizer), cpu(wrapped)
    assert apart < here / 4, (here, apart)


ORPHAN_SCRIPT = """
import time
from service.tokenizing import TokenizerProcess
process = TokenizerProcess()
process.start().result(300)
print(next(iter(process._pool._processes.values())).pid, flush=True)
time.sleep(600)
"""


def test_the_child_ends_with_its_parent_however_it_ends(tmp_path):
    """SIGKILL (or the kernel's out-of-memory killer) gives the parent no shutdown: the child,
    which holds its own queue's other end, would wait for a task forever."""
    parent = subprocess.Popen([sys.executable, "-c", ORPHAN_SCRIPT], stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        child = int(parent.stdout.readline())
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + STOP_DEADLINE_S
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has ended (init reaps it)


def test_a_child_that_dies_costs_no_answer(tokenizer, fresh):
    wrapped = fresh.wrap("v1", tokenizer)
    fresh.start().result(START_DEADLINE_S)
    child = _child(fresh)
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    assert torch.equal(wrapped(PROMPTS), tokenizer(PROMPTS))  # here, this once
    assert torch.equal(wrapped(PROMPTS), tokenizer(PROMPTS))  # here: no new child before 1 s
    assert _child(fresh) is None
    fresh.start().result(START_DEADLINE_S)  # a new child
    assert _child(fresh).pid != child.pid
    assert torch.equal(wrapped(PROMPTS), tokenizer(PROMPTS))
    assert "v1" in fresh._sent


def test_a_tokenizer_that_cannot_be_sent_stays_in_the_process(tokenizer, shared):
    class Local(type(tokenizer)):  # pickle cannot find a class defined here by its name
        pass

    local = copy.copy(tokenizer)
    local.__class__ = Local
    wrapped = shared.wrap("local", local)
    assert torch.equal(wrapped(PROMPTS), tokenizer(PROMPTS))
    assert "local" in shared._unsendable
    assert torch.equal(wrapped(PROMPTS), tokenizer(PROMPTS))
    assert torch.equal(shared.wrap("after", tokenizer)(PROMPTS), tokenizer(PROMPTS))  # still up
    assert "after" in shared._sent


def test_a_tokenizer_that_does_not_run_in_python_is_left_as_it_is(tokenizer, fresh):
    def elsewhere(texts, **kwargs):  # e.g. a Hugging Face tokenizer: its work runs in Rust
        return tokenizer(texts, **kwargs)

    assert tokenizes_in_python(tokenizer) and not tokenizes_in_python(elsewhere)
    assert fresh.wrap("v1", elsewhere) is elsewhere


def test_versions_past_the_child_s_keep_are_sent_again(tokenizer, shared):
    short = open_clip.get_tokenizer("ViT-B-32", context_length=16)
    for i in range(KEEP + 2):
        chosen = short if i % 2 else tokenizer
        assert torch.equal(shared.wrap(f"k{i}", chosen)(PROMPTS), chosen(PROMPTS))
    assert "k0" not in shared._sent  # the oldest left the child: sent again, still k0's
    # the last KEEP are still in the child: tokenized there without being sent again (a child
    # that had dropped one would fail the list, and the failure takes it out of _sent)
    for i in range(2, KEEP + 2):
        chosen = short if i % 2 else tokenizer
        assert torch.equal(shared.wrap(f"k{i}", chosen)(PROMPTS), chosen(PROMPTS))
    assert list(shared._sent) == [f"k{i}" for i in range(2, KEEP + 2)]
    assert torch.equal(shared.wrap("k0", tokenizer)(PROMPTS), tokenizer(PROMPTS))
    assert torch.equal(shared.wrap("k1", short)(PROMPTS), short(PROMPTS))


def test_the_app_tokenizes_a_long_label_list_apart_to_the_same_answer(data_dir):
    labels = ["red", "green", "blue", "yellow"] + [f"colour number {i}" for i in range(80)]
    with running_client(make_settings(data_dir)) as client:
        tokenizers = client.app.state.services.holder.tokenizers
        here = classify_files(client, ("red.png", png_bytes("red")), labels=",".join(labels),
                              top_k=str(len(labels)))
        tokenizers.start().result(START_DEADLINE_S)  # the first long list started the child
        child = _child(tokenizers)
        apart = classify_files(client, ("red.png", png_bytes("red")), labels=",".join(labels[::-1]),
                               top_k=str(len(labels)))
        assert "v-colour" in tokenizers._sent  # the served version's tokenizer is in the child
    assert here.status_code == apart.status_code == 200, (here.text, apart.text)
    scores = [{s["label"]: s["probability"] for s in r.json()["results"][0]["labels"]}
              for r in (here, apart)]
    assert max(scores[0], key=scores[0].get) == max(scores[1], key=scores[1].get) == "red"
    assert set(scores[0]) == set(scores[1]) == set(labels)
    assert all(abs(scores[0][label] - p) < 1e-5 for label, p in scores[1].items())
    child.join(10)
    assert not child.is_alive()  # stopped with the app


def test_ctrl_c_leaves_the_child_to_its_parent(tokenizer, fresh):
    """Ctrl-C reaches the terminal's whole process group; the app ends the child at its shutdown
    (a child that died of it would print a traceback on the terminal)."""
    fresh.start().result(START_DEADLINE_S)
    child = _child(fresh)
    os.kill(child.pid, signal.SIGINT)
    time.sleep(0.2)  # let it be delivered: the next list would find the child gone
    assert torch.equal(fresh.wrap("v1", tokenizer)(PROMPTS), tokenizer(PROMPTS))
    assert child.is_alive() and _child(fresh) is child and "v1" in fresh._sent
