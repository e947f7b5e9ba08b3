"""Helpers shared by the tests; fixtures stay in the conftest.py files, which import these.

- ``synthetic``: the tiny CLIP config, synthetic colour and stripe tasks, fast hyper-parameters;
- ``colour``: the colour CLIP whose answers are fixed by construction, and apps serving it;
- ``archives``: dataset files (encoded images, zip and tar archives, reference folders, uploads);
- ``processes``: free ports, polling, redis-server and the ``zscl serve``/``zscl worker`` stack.

The keys every test server is started with are here, so that servers and clients agree.
"""

ADMIN_KEY = "admin-key-for-tests"
INFERENCE_KEY = "inference-key-for-tests"
ADMIN = {"X-API-Key": ADMIN_KEY}
