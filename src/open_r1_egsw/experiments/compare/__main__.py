import sys

from open_r1_egsw.experiments.compare.cli import main

sys.exit(main())
