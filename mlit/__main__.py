"""`python -m mlit ...` is the same as the `mlit` command."""

from mlit.cli.main import main

if __name__ == "__main__":
    main()
