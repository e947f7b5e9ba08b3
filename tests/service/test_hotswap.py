"""Zero-downtime hot-swap under concurrent load: no failed request, no mixed versions."""

import asyncio
import collections

import httpx

from records import registry
from service.app import create_app
from tests.helpers import ADMIN_KEY
from tests.helpers.colour import COLOUR_LABELS, make_settings, png_bytes

# the red image's answer under each version, by construction; a request that mixed one
# version's image features with the other's text head would answer "blue"
EXPECTED = {"v-colour": "red", "v-swapped": "green"}


async def _wait_for(client, version: str, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        response = await client.get("/livez")
        if response.headers["X-Model-Version"] == version:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{version} not served after {timeout_s}s")


def test_concurrent_classify_across_five_activations(data_dir):
    settings = make_settings(data_dir, reconcile_interval_s=0.1, batch_max_size=16)
    app = create_app(settings)
    services = app.state.services
    image = png_bytes("red")
    seen = collections.Counter()
    failures = []

    def worker_style_activate(version: str, expected: str) -> bool:
        # how the Celery worker promotes: compare-and-swap in the DB, no call to this process
        with services.sessions() as session:
            return registry.activate(session, version, expected_current=expected)

    async def scenario():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
                await _wait_for(client, "v-colour")
                stop = asyncio.Event()

                async def load():
                    while not stop.is_set():
                        response = await client.post(
                            "/v1/classify", files=[("images", ("r.png", image))],
                            data={"labels": COLOUR_LABELS, "top_k": "1"})
                        if response.status_code != 200:
                            failures.append((response.status_code, response.text))
                            continue
                        body = response.json()
                        version = body["model_version"]
                        top = body["results"][0]["labels"][0]["label"]
                        if response.headers["X-Model-Version"] != version or EXPECTED[version] != top:
                            failures.append((version, response.headers["X-Model-Version"], top))
                        seen[version] += 1

                async def switch():
                    current = "v-colour"
                    for round_ in range(5):
                        target = "v-swapped" if current == "v-colour" else "v-colour"
                        before = sum(seen.values())
                        if round_ % 2 == 0:
                            response = await client.post(f"/v1/models/{target}/activate",
                                                         headers={"X-API-Key": ADMIN_KEY})
                            assert response.status_code == 200, response.text
                        else:
                            assert await asyncio.to_thread(worker_style_activate, target, current)
                        await _wait_for(client, target)
                        while sum(seen.values()) < before + 20:  # let the load run on each version
                            await asyncio.sleep(0.01)
                        current = target
                    stop.set()

                await asyncio.gather(switch(), *[load() for _ in range(12)])
            return services.metrics

    metrics = asyncio.run(scenario())
    assert failures == []
    assert seen["v-colour"] > 20 and seen["v-swapped"] > 20
    swaps = {s.labels["trigger"]: s.value for m in metrics.swaps.collect() for s in m.samples
             if s.name.endswith("_total")}
    assert swaps == {"startup": 1.0, "api": 3.0, "reconcile": 2.0}
    batches = [s.value for m in metrics.batch_size.collect() for s in m.samples if s.name.endswith("_count")]
    images = [s.value for m in metrics.batch_size.collect() for s in m.samples if s.name.endswith("_sum")]
    assert images[0] / batches[0] > 1.5  # concurrent requests were batched together
