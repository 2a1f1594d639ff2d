import sys

from v4_ascend.cli import main

sys.exit(main())
