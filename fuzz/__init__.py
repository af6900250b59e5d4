"""Fuzz targets of the reliability campaign (DESIGN §9 "hostile cards and frames").

One file per target; each runs under atheris (``python fuzz/<target>.py -atheris_runs=N``) or,
without atheris, under the plain mutation driver of ``fuzz/run.py``. See fuzz/README.md.
"""
