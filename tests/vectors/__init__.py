"""casync's own outputs for our inputs: the vectors the format tests compare with.

``blob/`` and ``tree/`` hold what casync wrote, ``gen_input.py`` rebuilds the
inputs, ``regenerate.py`` rebuilds everything with the installed casync (see
README.md in this directory).
"""

from pathlib import Path

VECTORS = Path(__file__).resolve().parent
