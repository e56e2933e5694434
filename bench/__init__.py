"""`make bench`: radmesh beside the script a site would hand-roll (see bench/__main__.py)."""
