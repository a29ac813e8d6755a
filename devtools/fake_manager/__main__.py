import sys

from devtools.fake_manager.cli import main

if __name__ == "__main__":  # importable, for the test that checks what the package imports
    sys.exit(main())
