"""/metrics with several API processes (prometheus_client's multiprocess mode, chosen when the
library is imported, hence real processes): whichever process renders, counters are summed
over every process that ever ran, and gauges over the processes alive now."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.processes import REPO

# one API process's metrics: a classify request, head-cache counts, queue depth, served version
WRITE = """
import sys
from service.metrics import Metrics
from zscl_core import HeadCache

metrics, heads = Metrics(), HeadCache(4)
heads.hits, heads.misses = {hits}, 1
metrics.watch(heads, lambda: {depth})
metrics.sync()
metrics.requests.labels("/v1/classify", "POST", "200", "v-1").inc()
metrics.served.labels("v-1").set(1)
print("written", flush=True)
sys.stdin.read()  # stays alive until the test closes stdin
"""
RENDER = """
import sys
from service.metrics import Metrics

sys.stdout.write(Metrics().render().decode())
"""


def _python(code: str, env: dict[str, str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, **kwargs)


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_render_sums_every_process_and_only_live_gauges(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    live = _python(WRITE.format(hits=2, depth=7), env)
    try:
        gone = _python(WRITE.format(hits=3, depth=5), env)
        assert gone.communicate("", timeout=60)[0] == "written\n"  # wrote, then exited
        assert live.stdout.readline() == "written\n"
        rendered = _python(RENDER, env).communicate(timeout=60)[0]
    finally:
        live.communicate("", timeout=60)
    samples = _samples(rendered)
    classify = (("method", "POST"), ("model_version", "v-1"), ("route", "/v1/classify"), ("status", "200"))
    # counters: both writers (the renderer adds nothing)
    assert samples[("zscl_http_requests_total", classify)] == 2
    assert samples[("zscl_head_cache_hits_total", ())] == 3 + 2
    assert samples[("zscl_head_cache_misses_total", ())] == 2
    # gauges: the live writer's and the renderer's own (0); the exited writer's are dropped
    assert samples[("zscl_inference_queue_images", ())] == 7
    assert samples[("zscl_model_served", (("model_version", "v-1"),))] == 1
