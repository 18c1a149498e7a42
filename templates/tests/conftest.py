import sys
from pathlib import Path

# The shared live-engine fixture of the Python suites.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests/support/python"))
