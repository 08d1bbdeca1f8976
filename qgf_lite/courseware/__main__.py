import sys

from qgf_lite.courseware.cli import main

sys.exit(main())
