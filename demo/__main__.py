import sys

from demo.orchestrator import main

if __name__ == "__main__":
    sys.exit(main())
