"""The only place for I/O: pika, SQLite, signals, inotify, sd_notify and the real clock."""
