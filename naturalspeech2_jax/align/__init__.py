"""align subpackage."""
