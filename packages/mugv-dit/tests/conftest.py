"""Puts this folder on sys.path so tests share `_mugdit_reference` (pytest uses importlib mode)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
