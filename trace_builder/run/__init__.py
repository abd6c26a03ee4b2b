"""The run directory and the life of a run: shards and manifests, the lock, progress, how the command line ends."""
