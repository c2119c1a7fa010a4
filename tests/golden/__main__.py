"""`python -m tests.golden`: write the golden exposition files again (see __init__.py)."""

from tests.golden import OPENMETRICS_FILE, TEXT_FILE, write

write()
print(f"wrote {TEXT_FILE.name} and {OPENMETRICS_FILE.name}; review the diff before committing")
