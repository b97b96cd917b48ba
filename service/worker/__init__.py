"""The training worker: `python -m service.worker` (see __main__.py and loop.py)."""
