"""`python -m convmixer_lib`: the command line (`cli.main`)."""

from .cli import main

if __name__ == "__main__":
    main()
