
from flowforge.cli import run

run()
