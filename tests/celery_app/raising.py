"""A module that fails on import, as a user's app does when its database is down."""

raise RuntimeError("cannot reach the database\n(a second line that must not be printed)")
