"""`python -m codec.cli ...` (also what torchrun runs for multi-process training)."""
import sys

from codec.cli.main import main

sys.exit(main())
