"""radmesh package."""
