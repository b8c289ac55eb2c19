import sys

from fashattr.cli import main

sys.exit(main())
