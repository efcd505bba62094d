"""The runner daemon: claim fold jobs, heartbeat, run each fold in a sandboxed child,
write prediction files."""

SANDBOX_FAILED = 70  # a fold child's exit code when its sandbox could not be set up
