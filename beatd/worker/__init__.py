"""The executor daemon (`beatd worker`): decide, run, settle."""
