"""The migration scripts, one file per revision, named after its id (``0001_baseline.py``)."""
