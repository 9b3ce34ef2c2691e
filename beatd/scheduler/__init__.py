"""The scheduler daemon (`beatd run`) and `beatd trigger`."""
