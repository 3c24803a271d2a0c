"""Kong plugins, one room each: its schema beside its phase handlers."""
