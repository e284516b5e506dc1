"""`python -m search.qdrant_load`: the short name of `python -m search.build.qdrant_load`."""

from search.build.qdrant_load import main

if __name__ == "__main__":
    raise SystemExit(main())
