import sys

from hlm_engine.cli import main

sys.exit(main())
