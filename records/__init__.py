"""records: the persistence layer shared by the API (``service``) and the workers (``worker``);
it imports only ``zscl_core``, never the queue (``jobqueue``), the web or the worker. Import its
modules by name (``from records import jobs``); this package re-exports nothing.

- ``settings``: the one settings object per process, read from ``ZSCL_`` environment variables.
- ``errors``: the project's error hierarchy, with messages that say how to fix the problem.
- ``tables``: the database tables (registry, label sets, datasets, jobs, events, feedback).
- ``db``: the engine and session factory, and upgrading the schema.
- ``migrations``: the schema's history as Alembic revisions, and the runner that applies them.
- ``registry``: the model version registry and the durable serving pointer.
- ``label_sets``: named class names and templates, used by name in classify.
- ``datasets``: dataset rows for uploaded archives, and zero-shot suites.
- ``ingest``: turning an uploaded zip or tar into a validated, content-addressed dataset directory.
- ``jobs``: job records: creation, state transitions, progress, events, cancel, reaping.
- ``feedback``: predictions kept with their images, users' answers, live accuracy.
- ``feedback_dataset``: a label set's answered predictions as an ordinary dataset.
"""
