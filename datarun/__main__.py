import sys

from datarun.cli import main

sys.exit(main())
