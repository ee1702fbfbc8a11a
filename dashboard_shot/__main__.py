import sys

from dashboard_shot.run import main

sys.exit(main())
