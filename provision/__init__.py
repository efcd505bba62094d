"""Configure runner machines over SSH (paramiko): install, configure, start, stop."""
