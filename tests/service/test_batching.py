import asyncio
import dataclasses
import time

import pytest
import torch

from records.errors import NotReady, QueueFull
from service.imaging import preprocess_images
from service.api.errors import response_for
from service.batching import MicroBatcher, to_device, to_host
from service.serving import ServedModel, frozen_image_encoder, load_served
from tests.helpers.colour import png_bytes

LABELS = ["red", "green", "blue", "yellow"]


@pytest.fixture(scope="module")
def served_pair(colour_versions):
    root = colour_versions / "versions"
    return (load_served(root / "v-colour", "v-colour", 1, "cpu"),
            load_served(root / "v-swapped", "v-swapped", 2, "cpu"))


def _job(served, colour):
    pixels = preprocess_images([("x", png_bytes(colour))], served.preprocess, max_pixels=10_000)
    return pixels, served.build_head(LABELS, ["{}"])


def test_concurrent_requests_share_one_forward_and_versions_stay_apart(served_pair):
    plain, swapped = served_pair
    sizes = []

    async def scenario():
        batcher = MicroBatcher(max_size=32, max_wait_s=1.0, queue_max=100, on_batch=sizes.append)
        batcher.start()
        jobs = [(plain, "red"), (swapped, "red"), (plain, "blue"), (swapped, "blue"), (plain, "green")]
        batcher.admit(len(jobs))
        results = await asyncio.gather(*[batcher.submit(s, *_job(s, c), top_k=1) for s, c in jobs])
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert sizes == [5]
    assert [LABELS[r[0][0][0]] for r in results] == ["red", "green", "blue", "blue", "green"]


def test_mixing_versions_would_show(served_pair):
    """The check the hot-swap test relies on: one version's image features with the other's
    text head give an answer neither version gives."""
    plain, swapped = served_pair
    for image_model, text_model in ((plain, swapped), (swapped, plain)):
        pixels = preprocess_images([("x", png_bytes("red"))], image_model.preprocess, max_pixels=10_000)
        logits = image_model.encode_images(pixels) @ text_model.build_head(LABELS, ["{}"])
        assert LABELS[int(logits.argmax())] == "blue"


def test_a_lone_request_does_not_wait_for_company(served_pair):
    plain, _ = served_pair

    async def scenario():
        batcher = MicroBatcher(max_size=32, max_wait_s=10.0, queue_max=100)
        batcher.start()
        batcher.admit(1)
        started = time.perf_counter()
        result = await batcher.submit(plain, *_job(plain, "yellow"), top_k=2)
        elapsed = time.perf_counter() - started
        await batcher.stop()
        return result, elapsed

    result, elapsed = asyncio.run(scenario())
    # the batcher does not hold a lone request for company: it answers in about 0.01 s, where
    # waiting for others would take max_wait_s (10 s); half of that is a generous bound
    assert elapsed < 5.0
    assert LABELS[result[0][0][0]] == "yellow" and len(result[0]) == 2


def test_full_queue_is_429_with_retry_after():
    batcher = MicroBatcher(max_size=4, max_wait_s=0.0, queue_max=3)
    batcher.admit(2)
    with pytest.raises(QueueFull) as info:
        batcher.admit(2)
    response = response_for(info.value)
    assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    batcher.release(2)
    batcher.admit(3)


def test_probabilities_match_an_unbatched_forward(served_pair):
    plain, _ = served_pair
    pixels, head = _job(plain, "red")
    expected = (plain.logit_scale * plain.encode_images(pixels) @ head).softmax(-1)[0]

    async def scenario():
        batcher = MicroBatcher(max_size=8, max_wait_s=0.0, queue_max=10)
        batcher.start()
        batcher.admit(1)
        out = await batcher.submit(plain, pixels, head, top_k=4)
        await batcher.stop()
        return out

    ranked = asyncio.run(scenario())[0]
    assert torch.allclose(torch.tensor([p for _, p in sorted(ranked)]), expected, atol=1e-6)


def test_the_traced_image_encoder_gives_the_eager_features(served_pair):
    """The graph takes what requests bring, uint8 pixels, and scales them itself; float pixels
    (the whole transform's) take the eager model, to the same features."""
    plain, _ = served_pair
    assert plain.image_graph is not None and plain.image_graph_input == torch.uint8
    pixels = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    scaled = plain.device_preprocess.finish(pixels)
    eager = plain.model.encode_image(scaled, normalize=True)
    assert torch.allclose(plain.image_graph(pixels), eager, atol=1e-5)
    assert torch.allclose(plain.encode_images(pixels), eager, atol=1e-5)
    assert torch.allclose(plain.encode_images(scaled), eager, atol=1e-5)


def test_a_tower_that_does_not_trace_faithfully_stays_eager():
    class BatchDependent(torch.nn.Module):  # python arithmetic on the batch size: baked in by tracing
        def encode_image(self, x, normalize=False):
            return torch.nn.functional.normalize(x.flatten(1) + int(x.shape[0]), dim=-1)

    assert frozen_image_encoder(BatchDependent(), torch.rand(1, 3, 4, 4)) is None


def test_batches_run_while_the_event_loop_is_busy(served_pair):
    """The inference thread gathers its next batch itself: a loop busy parsing HTTP (here:
    blocked outright) does not leave the model idle between batches."""
    plain, _ = served_pair
    batch_sizes = []

    async def scenario():
        batcher = MicroBatcher(max_size=1, max_wait_s=0.0, queue_max=10,
                               on_batch=batch_sizes.append)
        batcher.start()
        colours = ["red", "green", "blue"]
        batcher.admit(len(colours))
        waiting = [asyncio.ensure_future(batcher.submit(plain, *_job(plain, c), top_k=1))
                   for c in colours]
        await asyncio.sleep(0)  # the submits queue their jobs
        time.sleep(1.0)  # the loop is blocked: no coroutine or callback runs
        ran_while_blocked = len(batch_sizes)
        results = await asyncio.gather(*waiting)
        await batcher.stop()
        return ran_while_blocked, results

    ran_while_blocked, results = asyncio.run(scenario())
    # three one-image forwards of the colour model take milliseconds; a batcher driven by the
    # event loop would have started at most one of them during the blocked second
    assert ran_while_blocked == 3
    assert [LABELS[r[0][0][0]] for r in results] == ["red", "green", "blue"]


def _copy_as(cls, served: ServedModel) -> ServedModel:
    """``served`` as an instance of ``cls``, a ServedModel subclass changing one behaviour."""
    return cls(**{f.name: getattr(served, f.name) for f in dataclasses.fields(served)})


class _SlowServed(ServedModel):
    def encode_images(self, pixels):
        time.sleep(0.3)
        return super().encode_images(pixels)


def test_stopping_fails_the_jobs_still_queued_with_503(served_pair):
    plain, _ = served_pair
    slow = _copy_as(_SlowServed, plain)

    async def scenario():
        batcher = MicroBatcher(max_size=1, max_wait_s=0.0, queue_max=10)
        batcher.start()
        batcher.admit(3)
        jobs = [asyncio.ensure_future(batcher.submit(slow, *_job(plain, c), top_k=1))
                for c in ("red", "green", "blue")]
        await asyncio.sleep(0.1)  # the first job's forward is under way
        await batcher.stop()  # finishes that forward, then fails what is left
        await asyncio.gather(*jobs, return_exceptions=True)
        batcher.admit(1)  # after the stop, a request that finished decoding is refused
        with pytest.raises(NotReady):
            await batcher.submit(plain, *_job(plain, "red"), top_k=1)
        batcher.admit(10)  # and its reservation was given back: the queue is empty again
        return jobs, batcher.depth

    (first, *rest), depth = asyncio.run(scenario())
    assert LABELS[first.result()[0][0][0]] == "red"
    assert all(isinstance(job.exception(), NotReady) for job in rest) and depth == 0
    assert response_for(rest[0].exception()).status_code == 503


class _FlakyServed(ServedModel):
    failures = 1  # forwards that raise before it works

    def encode_images(self, pixels):
        if self.failures:
            self.failures -= 1
            raise TypeError("a bug in the forward")
        return super().encode_images(pixels)


def test_an_unexpected_error_fails_its_batch_and_the_next_batch_is_served(served_pair):
    plain, _ = served_pair
    flaky = _copy_as(_FlakyServed, plain)

    async def scenario():
        batcher = MicroBatcher(max_size=1, max_wait_s=0.0, queue_max=10)
        batcher.start()
        batcher.admit(2)
        first, second = await asyncio.gather(
            batcher.submit(flaky, *_job(plain, "red"), top_k=1),
            batcher.submit(flaky, *_job(plain, "blue"), top_k=1), return_exceptions=True)
        await batcher.stop()
        return first, second

    first, second = asyncio.run(scenario())
    assert isinstance(first, TypeError)
    assert LABELS[second[0][0][0]] == "blue"


def test_on_the_cpu_a_batch_is_only_concatenated_and_its_features_not_copied():
    a, b = torch.rand(2, 3, 4, 4), torch.rand(1, 3, 4, 4)
    assert torch.equal(to_device([a, b], "cpu"), torch.cat([a, b]))
    features = torch.rand(3, 8)
    assert to_host(features) is features


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_pixels_go_over_and_features_come_back_through_pinned_memory():
    a, b = torch.rand(2, 3, 4, 4), torch.rand(1, 3, 4, 4)
    staged = to_device([a, b], "cuda")
    assert staged.is_cuda and torch.equal(staged.cpu(), torch.cat([a, b]))
    host = to_host(staged.flatten(1) * 2)
    assert host.device.type == "cpu" and host.is_pinned()
    assert torch.equal(host, torch.cat([a, b]).flatten(1) * 2)
