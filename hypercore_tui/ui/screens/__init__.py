"""Modal screens of the dashboard, one per module."""
