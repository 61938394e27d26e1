"""`python bridge.py ...` is the same as the `bridge` console script."""

from bridge.cli.main import main

if __name__ == "__main__":
    main()
