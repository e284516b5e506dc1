"""Build an index bundle from Unsplash Lite or local images. Not implemented yet: see the build_index issue.

Until then, `search.bundle.write_bundle` writes bundles (as `scripts/demo_bundle.py` does for the demo).
"""

import sys

if __name__ == "__main__":
    sys.exit("build_index.py is not implemented yet; scripts/demo_bundle.py shows how a bundle is written")
