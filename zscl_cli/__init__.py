"""The ``zscl`` command line: serve, worker, classify, models, dataset, job, bench."""
