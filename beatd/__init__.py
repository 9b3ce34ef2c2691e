"""beatd: a cron-like scheduler daemon that publishes due runs to RabbitMQ."""

__version__ = "0.1.0"
