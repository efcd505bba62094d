"""The runner daemon: claim fold jobs, heartbeat, run each fold in a sandboxed child,
write prediction files."""
