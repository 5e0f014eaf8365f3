"""``python -m cleancodec``: the same command as the ``cleancodec`` console script."""
from cleancodec.cli import main

if __name__ == "__main__":
    main()
